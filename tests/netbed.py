"""A throwaway XenServer-like host in network namespaces.

One 'host' namespace holds the bridge xenbr0 (dom0's own address on it), the
guest ports vif1.0, vif2.0 and tap3.0 (an HVM guest's emulated NIC) and the
uplink eth1. Each guest and the uplink's far end live in namespaces of their
own. Only documentation addresses are used. destroy() removes everything,
and the namespaces take their firewall tables with them.
"""

import itertools
import json
import os
import re
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOOK = os.path.join(TOP, "xapi-plugin", "vif_rules.py")
HOST_RULES = os.path.join(TOP, "host-rules", "host_rules.py")
FRAMES = os.path.join(TOP, "tests", "frames.py")

BRIDGE = "xenbr0"
# How long sniffers watch while frames are sent; longer in an emulated VM
# (tests/test_ovs_kernel_datapath.py), where each sender starts slowly.
OBSERVE_SECONDS = float(os.environ.get("VIF_RULES_TEST_OBSERVE_SECONDS", "1.5"))
UPLINK_PORT = "eth1"
DOM0_IP, DOM0_IP6, DOM0_MAC = "192.0.2.1", "2001:db8::1", "02:00:00:00:00:b0"
UPLINK_IP, UPLINK_IP6, UPLINK_MAC = "192.0.2.254", "2001:db8::fe", "02:00:00:00:00:fe"


class Guest(object):
    def __init__(self, port, short, mac, ipv4, ipv6):
        self.port, self.short, self.mac = port, short, mac
        self.ipv4, self.ipv6 = ipv4, ipv6

    def network(self, ipv4=None, ipv6=None):
        """The NIC's data as Nova writes it."""
        ipv4 = self.ipv4 if ipv4 is None else ipv4
        ipv6 = self.ipv6 if ipv6 is None else ipv6
        return json.dumps({
            "label": "public", "mac": self.mac,
            "ips": [{"ip": ip, "netmask": "255.255.255.0", "enabled": "1"} for ip in ipv4],
            "ip6s": [{"ip": ip, "netmask": "64", "enabled": "1"} for ip in ipv6],
            "gateway": UPLINK_IP, "dns": [UPLINK_IP]})


GUESTS = [
    Guest("vif1.0", "g1", "02:00:00:00:00:01", ["192.0.2.11"], ["2001:db8::11"]),
    Guest("vif2.0", "g2", "02:00:00:00:00:02", ["192.0.2.12"], []),
    Guest("tap3.0", "g3", "02:00:00:00:00:03", ["192.0.2.13"], []),
]

BACKENDS = {
    "legacy": {"IPTABLES": "iptables-legacy", "IP6TABLES": "ip6tables-legacy"},
    "nft": {"IPTABLES": "iptables-nft", "IP6TABLES": "ip6tables-nft"},
}

_counter = itertools.count()


def shebang_flags(script):
    """The interpreter flags of a script's '#!' line (the hook's '-S'): the
    tests and the benchmark run a script as its '#!' line says, under the
    interpreter they choose."""
    with open(script) as handle:
        words = handle.readline()[2:].split()
    if words[:1] == ["/usr/bin/env"]:
        words = words[1:]
    return words[1:]


def available():
    """None if the bed can run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "iptables-legacy", "iptables-nft", "ebtables-nft", "arptables-legacy"):
        if not any(os.access(os.path.join(d, tool), os.X_OK)
                   for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin")):
            return "%s is not installed (./build.sh test installs it)" % tool
    probe = "vrprobe%d" % os.getpid()
    if subprocess.call(["ip", "netns", "add", probe], stderr=subprocess.DEVNULL) != 0:
        return "cannot create network namespaces here"
    subprocess.call(["ip", "netns", "del", probe])
    return None


class NetBed(object):
    def __init__(self, workdir, backend="legacy", guests=GUESTS, trusted=(UPLINK_PORT,)):
        self.workdir = workdir
        self.backend = backend
        self.guests = list(guests)
        self.trusted = list(trusted)
        self.prefix = "vrt%x%x" % (os.getpid() % 0xffff, next(_counter))
        self.namespaces = []
        self.conf = os.path.join(workdir, "vif-rules.conf")
        self.state_dir = os.path.join(workdir, "state")

    # ------------------------------------------------------------ plumbing

    def ns(self, short):
        return "%s-%s" % (self.prefix, short)

    def run(self, short, argv, check=True, timeout=60, input=None, env=None):
        full = ["ip", "netns", "exec", self.ns(short)] + list(argv)
        result = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                                input=input, env=env)
        if check and result.returncode != 0:
            raise RuntimeError("%s failed (%d): %s%s" % (" ".join(full), result.returncode,
                                                        result.stdout, result.stderr))
        return result

    def ip(self, short, *args):
        return self.run(short, ["ip"] + list(args))

    def write_config(self, **extra):
        values = dict(BACKENDS[self.backend])
        values.update({"EBTABLES": "ebtables-nft", "ARPTABLES": "arptables-legacy",
                       "TRUSTED_INTERFACES": " ".join(self.trusted),
                       "LOCK_FILE": os.path.join(self.workdir, "lock"),
                       "STATE_DIR": self.state_dir})
        values.update(extra)
        with open(self.conf, "w") as handle:
            for key in sorted(values):
                handle.write('%s="%s"\n' % (key, values[key]))

    def env(self):
        env = dict(os.environ)
        env["VIF_RULES_CONF"] = self.conf
        return env

    # ------------------------------------------------------------ life cycle

    def create(self):
        self.write_config()
        for short in ["h", "up"] + [g.short for g in self.guests]:
            subprocess.run(["ip", "netns", "add", self.ns(short)], check=True)
            self.namespaces.append(self.ns(short))
            self.ip(short, "link", "set", "lo", "up")
        self.ip("h", "link", "add", BRIDGE, "address", DOM0_MAC, "type", "bridge",
                "stp_state", "0", "forward_delay", "0")
        self.ip("h", "addr", "add", DOM0_IP + "/24", "dev", BRIDGE)
        self.ip("h", "addr", "add", DOM0_IP6 + "/64", "dev", BRIDGE, "nodad")
        self.ip("h", "link", "set", BRIDGE, "up")
        self._plug(UPLINK_PORT, "up", UPLINK_MAC, [UPLINK_IP], [UPLINK_IP6])
        for guest in self.guests:
            self._plug(guest.port, guest.short, guest.mac, guest.ipv4, guest.ipv6)
        return self

    def _plug(self, port, short, mac, ipv4, ipv6):
        self.ip("h", "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", self.ns(short))
        self.ip("h", "link", "set", port, "master", BRIDGE, "up")
        self.ip(short, "link", "set", "eth0", "address", mac, "up")
        for address in ipv4:
            self.ip(short, "addr", "add", address + "/24", "dev", "eth0")
        for address in ipv6:
            self.ip(short, "addr", "add", address + "/64", "dev", "eth0", "nodad")

    def destroy(self):
        for name in self.namespaces:
            subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)
        self.namespaces = []

    def __enter__(self):
        try:
            return self.create()
        except BaseException:
            self.destroy()
            raise

    def __exit__(self, *exc):
        self.destroy()

    # ------------------------------------------------------------ the product

    def hook(self, *args, python=None, check=True):
        python = python or sys.executable
        return self.run("h", [python] + shebang_flags(HOOK) + [HOOK] + list(args),
                        check=check, env=self.env())

    def host_rules(self, *args, python=None, check=True):
        python = python or sys.executable
        return self.run("h", [python, HOST_RULES] + list(args), check=check, env=self.env())

    def python_in_host(self, python=None):
        """A command that runs python inside the host namespace (for XAPI's
        plugin runner, which starts [python, plugin, xml])."""
        python = python or sys.executable
        path = os.path.join(self.workdir, "python-in-host-%s" % os.path.basename(
            os.path.dirname(os.path.dirname(python))))
        with open(path, "w") as handle:
            handle.write('#!/bin/sh\nexec ip netns exec %s %s "$@"\n' % (self.ns("h"), python))
        os.chmod(path, 0o755)
        return path

    def guest(self, port):
        for guest in self.guests:
            if guest.port == port:
                return guest
        raise KeyError(port)

    def device_filters(self, ports):
        """{port: True if vif-rules' device filter (vifrules.devfilter) is on
        its device in dom0}, read as the product reads it."""
        from vifrules import devfilter
        from vifrules.addresses import VifName
        vifs = [VifName(port) for port in ports]
        listing = self.run("h", [devfilter.TC, "-force", "-batch", "-"],
                           input="\n".join(devfilter.reading_lines(vifs)) + "\n").stdout
        return devfilter.guarded(vifs, listing)

    def protect_all(self):
        self.host_rules("start")
        for guest in self.guests:
            self.hook("online", guest.port, "--network", guest.network())

    def ruleset(self):
        """Every table vif-rules writes, as text without dates or counters."""
        parts = []
        for tool in (BACKENDS[self.backend]["IPTABLES"] + "-save",
                     BACKENDS[self.backend]["IP6TABLES"] + "-save", "ebtables-nft-save"):
            text = self.run("h", [tool]).stdout
            text = re.sub(r"\[\d+:\d+\]", "[0:0]", text)  # built-in chains' counters
            parts.append("\n".join(l for l in text.splitlines() if not l.startswith("#")))
        parts.append(self.run("h", ["arptables-legacy", "-L", "-n"]).stdout)
        return "\n".join(parts)

    # ------------------------------------------------------------ traffic

    def send(self, short, frames):
        self.run(short, [sys.executable, FRAMES, "send", "eth0" if short != "h" else BRIDGE]
                 + [f.hex() for f in frames])

    def observe(self, points, markers, seconds=OBSERVE_SECONDS):
        """Start a sniffer per point ('g2', 'up', 'h' = dom0); returns a Sniffers."""
        return Sniffers(self, points, markers, seconds)

    def ping(self, short, address, count=2):
        command = ["ping", "-c", str(count), "-W", "1", "-i", "0.2", address]
        return self.run(short, command, check=False, timeout=15).returncode == 0

    def echo_works(self, kind, client, server, address, port=7000):
        """True if a 'tcp' or 'udp' echo from client to server's address works."""
        listener = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(server), sys.executable, FRAMES,
             "%s-echo" % kind, str(port), "6"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            if listener.stdout.readline().strip() != "ready":
                raise RuntimeError("echo server did not start: " + listener.stderr.read())
            result = self.run(client, [sys.executable, FRAMES, "%s-ask" % kind, address,
                                       str(port)], check=False, timeout=15)
            return result.returncode == 0
        finally:
            listener.kill()
            listener.wait()


class Sniffers(object):
    def __init__(self, bed, points, markers, seconds):
        self.markers = [m.hex() for m in markers]
        self.processes = {}
        for point in points:
            iface = BRIDGE if point == "h" else "eth0"
            process = subprocess.Popen(
                ["ip", "netns", "exec", bed.ns(point), sys.executable, FRAMES, "sniff",
                 iface, str(seconds)] + self.markers,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.processes[point] = process
        deadline = time.time() + 10
        for point, process in self.processes.items():
            line = process.stdout.readline().strip()
            if line != "ready" or time.time() > deadline:
                self.kill()
                raise RuntimeError("sniffer at %s did not start: %r %s" % (
                    point, line, process.stderr.read()))

    def kill(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()

    def counts(self):
        """{point: {marker bytes: frames seen}} once every sniffer has finished."""
        result = {}
        for point, process in self.processes.items():
            out, err = process.communicate(timeout=30)
            counts = json.loads(out.strip().splitlines()[-1])
            result[point] = dict((bytes.fromhex(k), v) for k, v in counts.items())
        return result
