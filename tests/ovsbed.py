"""The test bed of netbed.py on a real Open vSwitch instead of a Linux bridge.

The 'host' namespace runs its own ovsdb-server and ovs-vswitchd (started here,
with their own run directory; the machine's Open vSwitch service is never
used), a bridge xenbr0 on the userspace datapath (datapath_type=netdev: no
kernel module), dom0's address on the bridge's own port, and veth ports
vif1.0, vif2.0, tap3.0 and the uplink eth1 into namespaces of their own.
destroy() stops both daemons by PID and deletes the namespaces, also after a
failure half-way.
"""

import os
import re
import shutil
import signal
import subprocess
import time

import netbed
from vifrules import openflow
from netbed import BRIDGE, DOM0_IP, DOM0_IP6, DOM0_MAC, UPLINK_PORT

# Another Open vSwitch build (its bin and sbin first on PATH) brings its own schema.
SCHEMA = os.environ.get("VIF_RULES_TEST_OVS_SCHEMA", "/usr/share/openvswitch/vswitch.ovsschema")
# "netdev" (userspace, no kernel module) here; "system" (the kernel datapath,
# as on a XenServer host) inside the VM of tests/test_ovs_kernel_datapath.py.
DATAPATH = os.environ.get("VIF_RULES_TEST_OVS_DATAPATH", "netdev")
DAEMONS = ("ovsdb-server", "ovs-vswitchd")
# A flow's counters and ages in dump-flows, which change with traffic and time.
STATISTICS = re.compile(r"\b(duration|n_packets|n_bytes|idle_age|hard_age|idle_timeout_left)=[^,\s]*,? ?")


def available():
    reason = netbed.available()
    if reason:
        return reason
    for tool in DAEMONS + ("ovs-vsctl", "ovs-ofctl", "ovsdb-tool", "ethtool"):
        if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"):
            return "%s is not installed (./build.sh test installs openvswitch-switch)" % tool
    if not os.path.exists(SCHEMA):
        return "no %s" % SCHEMA
    return None


class OvsBed(netbed.NetBed):
    def __init__(self, workdir, guests=netbed.GUESTS, trusted=(UPLINK_PORT,)):
        netbed.NetBed.__init__(self, workdir, "legacy", guests, trusted)
        self.rundir = os.path.join(workdir, "ovs")
        self.daemons = []

    def write_config(self, **extra):
        extra.setdefault("BACKEND", "openvswitch")
        netbed.NetBed.write_config(self, **extra)

    def env(self):
        env = netbed.NetBed.env(self)
        env["OVS_RUNDIR"] = self.rundir
        return env

    def ovs_env(self):
        env = dict(os.environ)
        for name in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"):
            env[name] = self.rundir
        return env

    def vsctl(self, *args):
        return self.run("h", ["ovs-vsctl", "--timeout=10"] + list(args),
                        env=self.ovs_env()).stdout

    def ofctl(self, *args, check=True):
        return self.run("h", ["ovs-ofctl"] + list(args), env=self.ovs_env(),
                        check=check).stdout

    def appctl(self, *args):
        return self.run("h", ["ovs-appctl", "-t", os.path.join(self.rundir, "ovs-vswitchd.ctl")]
                        + list(args), env=self.ovs_env()).stdout

    # ------------------------------------------------------------ life cycle

    def create(self):
        self.write_config()
        os.makedirs(self.rundir)
        for short in ["h", "up"] + [g.short for g in self.guests]:
            subprocess.run(["ip", "netns", "add", self.ns(short)], check=True)
            self.namespaces.append(self.ns(short))
            self.ip(short, "link", "set", "lo", "up")
        database = os.path.join(self.rundir, "conf.db")
        subprocess.run(["ovsdb-tool", "create", database, SCHEMA], check=True)
        self._start("ovsdb-server", [database, "--remote=punix:%s" % os.path.join(
            self.rundir, "db.sock")])
        self._wait_for(os.path.join(self.rundir, "db.sock"))
        self.vsctl("--no-wait", "init")
        self._start("ovs-vswitchd", ["unix:%s" % os.path.join(self.rundir, "db.sock")])
        self.vsctl("add-br", BRIDGE, "--", "set", "bridge", BRIDGE, "datapath_type=" + DATAPATH,
                   "other-config:hwaddr=%s" % DOM0_MAC, "fail-mode=standalone")
        self._wait_for_link(BRIDGE)
        self.run("h", ["ethtool", "-K", BRIDGE, "tx", "off"], check=False)
        self.ip("h", "addr", "add", DOM0_IP + "/24", "dev", BRIDGE)
        self.ip("h", "addr", "add", DOM0_IP6 + "/64", "dev", BRIDGE, "nodad")
        self.ip("h", "link", "set", BRIDGE, "up")
        self._plug(UPLINK_PORT, "up", netbed.UPLINK_MAC, [netbed.UPLINK_IP],
                   [netbed.UPLINK_IP6])
        for guest in self.guests:
            self._plug(guest.port, guest.short, guest.mac, guest.ipv4, guest.ipv6)
        return self

    def _start(self, daemon, args):
        name = os.path.join(self.rundir, daemon)
        argv = ["ip", "netns", "exec", self.ns("h"), daemon] + args + [
            "--pidfile=%s.pid" % name, "--unixctl=%s.ctl" % name,
            "--log-file=%s.log" % name]
        # 'ip netns exec' execs the daemon: the pid is the daemon's own.
        process = subprocess.Popen(argv, env=self.ovs_env(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        self.daemons.append(process)

    def _wait_for(self, path, seconds=10):
        deadline = time.time() + seconds
        while not os.path.exists(path):
            if time.time() > deadline or [p for p in self.daemons if p.poll() is not None]:
                raise RuntimeError("Open vSwitch did not start: no %s" % path)
            time.sleep(0.02)

    def _wait_for_link(self, name, seconds=10):
        deadline = time.time() + seconds
        while self.run("h", ["ip", "link", "show", name], check=False).returncode != 0:
            if time.time() > deadline:
                raise RuntimeError("bridge port %s did not appear" % name)
            time.sleep(0.02)

    def _plug(self, port, short, mac, ipv4, ipv6):
        self.ip("h", "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", self.ns(short))
        self.host_end(port)
        self.vsctl("add-port", BRIDGE, port)
        self.ip(short, "link", "set", "eth0", "address", mac, "up")
        self.run(short, ["ethtool", "-K", "eth0", "tx", "off"])
        for address in ipv4:
            self.ip(short, "addr", "add", address + "/24", "dev", "eth0")
        for address in ipv6:
            self.ip(short, "addr", "add", address + "/64", "dev", "eth0", "nodad")

    def host_end(self, port):
        """A port's end in dom0 carries frames only: without 'arp off' and
        IPv6 off dom0's kernel would answer the guests itself, past OVS."""
        self.run("h", ["ethtool", "-K", port, "tx", "off"])
        self.ip("h", "link", "set", port, "arp", "off", "up")
        self.run("h", ["sysctl", "-q", "-w", "net/ipv6/conf/%s/disable_ipv6=1" % port])

    def add_internal_ports(self, ports):
        """Guest ports with nothing behind them ([(name, OpenFlow port
        number)], in one ovs-vsctl run): for tests that look at the flows,
        not at frames. Internal ports stay down: they send nothing."""
        args = []
        for name, ofport in ports:
            args += ["--", "add-port", BRIDGE, name, "--", "set", "Interface", name,
                     "type=internal", "ofport_request=%d" % ofport]
        self.vsctl(*args)

    def replug(self, port):
        """The port deleted and added again, as when a domid is reused."""
        self.vsctl("del-port", BRIDGE, port)
        self.vsctl("add-port", BRIDGE, port)

    def destroy(self):
        for process in reversed(self.daemons):
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait()
        self.daemons = []
        netbed.NetBed.destroy(self)

    # ------------------------------------------------------------ looking

    def flows(self, cookie=None):
        """The bridge's flows without counters, one a line, sorted: equal text,
        equal flows. The MACs OUTSIDE learns from traffic are left out."""
        args = ["dump-flows", BRIDGE]  # not --no-stats: OVS 2.5 lacks it
        if cookie is not None:
            args.append("cookie=0x%x/-1" % cookie)
        learnt = "cookie=0x%x," % openflow.LEARNT_COOKIE
        lines = [STATISTICS.sub("", l.strip()) for l in self.ofctl(*args).splitlines()
                 if "actions=" in l and learnt not in l]
        return "\n".join(sorted(lines)) + "\n"

    def force_flood(self):
        """Forget every learnt MAC and cached datapath flow (see REFERENCE §9)."""
        self.appctl("revalidator/purge")
        self.appctl("fdb/flush")
