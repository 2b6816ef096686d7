"""The product RPM's scriptlets, run by the real rpm against sandbox dom0 roots
of 5.6 FP1, 6.2, 7.6 and 8.3 (and an 8.3 with python3 alone): install,
upgrade v1 -> v2 with a configuration change kept, erase. The rules are real
(netfilter in a network namespace per root), XAPI is the stand-in on the
root's /var/lib/xcp/xapi, the vif script the fixture of its generation."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import xmlrpc.client

import pytest

import dom0root
from xapi_standin.server import XapiStandin

PROFILES = ["5.6-fp1", "6.2", "7.6", "8.3", "8.3-python3-only"]
HOOK = "/etc/xensource/scripts/vif_rules.py"
PLUGIN = "/etc/xapi.d/plugins/vif_rules"
VIF_PATCH = "/usr/lib/vif-rules/vif-patch"
MARKER = "# vif-rules hook (vif-patch "
G1_MAC, G2_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
OPERATOR_CONFIG = dict(dom0root.NETFILTER_CONFIG, TRUSTED_INTERFACES="eth1")
_names = itertools.count()


def nic(mac, ip):
    return json.dumps({"label": "public", "mac": mac,
                       "ips": [{"ip": ip, "netmask": "255.255.255.0", "enabled": "1"}]})


@pytest.fixture(scope="module")
def products(tmp_path_factory, userspace_rpms):
    reason = dom0root.unavailable()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("rpm-lifecycle")
    v1 = dom0root.build_product(work / "v1", 1)
    v2 = dom0root.build_product(work / "v2", 2)
    fakes = dom0root.build_fake_providers(work)
    base = dom0root.prepare_base(str(work / "base"))
    return {"v1": v1, "v2": v2, "fakes": fakes, "base": base, "userspace": userspace_rpms}


class Host(object):
    """A sandbox root in its own network namespace, with XAPI running: two
    guests run, vif1.0 with network data, vif2.0 without."""

    def __init__(self, tmp_path, profile, products):
        self.netns = "vrr%x%x" % (os.getpid() % 0xffff, next(_names))
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        self.root = None
        self.xs = None
        try:
            for argv in (["link", "set", "lo", "up"],
                         ["link", "add", "xenbr0", "type", "bridge"],
                         ["link", "add", "eth1", "type", "veth", "peer", "name", "eth1-far"],
                         ["link", "add", "vif1.0", "type", "veth", "peer", "name", "g1-eth0"],
                         ["link", "add", "vif2.0", "type", "veth", "peer", "name", "g2-eth0"]):
                subprocess.run(["ip", "-n", self.netns] + argv, check=True)
            for port in ("eth1", "vif1.0", "vif2.0"):
                subprocess.run(["ip", "-n", self.netns, "link", "set", port, "master", "xenbr0",
                                "up"], check=True)
            root = dom0root.Dom0Root(tmp_path / "root", dom0root.PROFILES[profile], self.netns)
            os.makedirs(root.path)
            self.root = root.create(products["base"], config=OPERATOR_CONFIG)
            self.xs = XapiStandin(socket_path=root.p("/var/lib/xcp/xapi")).start()
            host = self.xs.add_host("host1", uuid=root.host_uuid)
            vm = self.xs.add_vm("g1", resident_on=host, domid=1, xenstore_data={
                "vm-data/networking/" + G1_MAC.replace(":", ""): nic(G1_MAC, "192.0.2.11")})
            self.xs.add_vif(vm, "0", G1_MAC)
            vm2 = self.xs.add_vm("g2", resident_on=host, domid=2)
            self.xs.add_vif(vm2, "0", G2_MAC)
            self.providers(products)
        except BaseException:
            self.destroy()
            raise

    def providers(self, products):
        fakes = products["fakes"]
        if self.root.profile.own_userspace:   # 32-bit dom0: the pack's own RPMs
            rpms = [fakes["iptables"], fakes["bash"]] + products["userspace"]
            self.root.rpm("-i", "--ignorearch", "--nodeps", *rpms)
        else:
            self.root.rpm("-i", *fakes.values())

    def destroy(self):
        if self.xs is not None:
            self.xs.stop()
        subprocess.run(["ip", "netns", "del", self.netns], stderr=subprocess.DEVNULL)

    def netfilter(self, *argv):
        return subprocess.run(["ip", "netns", "exec", self.netns] + list(argv),
                              capture_output=True, text=True, check=True).stdout


@pytest.fixture
def host_for(tmp_path, products):
    made = []

    def make(profile):
        host = Host(tmp_path / profile, profile, products)
        made.append(host)
        return host

    yield make
    for host in made:
        host.destroy()


def _ebtables_forward(host):
    """The FORWARD chain's header line: 'Bridge chain: FORWARD, entries: N, policy: P'."""
    listing = host.netfilter("ebtables-nft", "-t", "filter", "-L", "FORWARD")
    return [l for l in listing.splitlines() if l.startswith("Bridge chain: FORWARD")]


def _patch_checkable(root):
    return dom0root.vif_patch_in_tree() and dom0root.fixture_for(root.profile.generation)


def _vif_patch_status(root, python):
    return root.chroot([python, VIF_PATCH, "status"], check=False)


def _plugin_get_version(root):
    call = xmlrpc.client.dumps(("OpaqueRef:session", {}), "get_version")
    result = root.chroot([PLUGIN, call])
    response = xmlrpc.client.loads(result.stdout)[0][0]
    assert response["Status"] == "Success", response
    return json.loads(response["Value"])


@pytest.mark.parametrize("profile", PROFILES)
def test_install_upgrade_erase(host_for, products, profile):
    host = host_for(profile)
    root = host.root
    python = root.profile.expected_python()
    operator_config = root.read("/etc/sysconfig/vif-rules")

    # ---- install
    installed = root.rpm("-ivh", products["v1"])
    out = installed.stdout
    assert "vif-rules: hook and plugin run under %s" % python in out, out
    assert root.read(HOOK).splitlines()[0] == "#!%s -S" % python
    assert root.read(PLUGIN).splitlines()[0] == "#!%s" % python
    assert os.stat(root.p(HOOK)).st_mode & 0o777 == 0o755
    assert _plugin_get_version(root)["version"] == dom0root.VERSION
    # default DROP and the running guest with data protected in the same step
    assert "1 running VIF(s) protected; without network data (closed): vif2.0" in out, out
    assert "policy: DROP" in _ebtables_forward(host)[0]
    assert os.path.exists(root.p("/var/run/vif-rules/vif1.0.json"))
    # the hook runs from its path by its '#!' line and asks XAPI itself
    event = root.chroot([HOOK, "online", "vif1.0"], check=False)
    assert event.returncode == 0, event.stderr
    # the operator's configuration is the one in force; the package's is beside it
    assert root.read("/etc/sysconfig/vif-rules") == operator_config
    assert os.path.exists(root.p("/etc/sysconfig/vif-rules.rpmnew"))
    calls = root.standin_calls()
    if root.profile.init == "sysv":
        assert "chkconfig --add host-rules" in calls, calls
    else:
        assert calls[:2] == ["systemctl daemon-reload", "systemctl enable host-rules.service"]
    if _patch_checkable(root):
        status = _vif_patch_status(root, python)
        assert status.returncode == 0 and status.stdout.split()[:2] == [
            "patched", root.profile.generation], status.stdout + status.stderr
        assert root.read(root.profile.script).count(MARKER) == 1

    # ---- upgrade to v2, with a configuration change of the operator's
    changed = operator_config + 'TRUSTED_INTERFACES="eth1 eth2"\n'
    root.write("/etc/sysconfig/vif-rules", changed)
    older_hook = "/etc/xensource/scripts/vif_rules_v0.py"
    if _patch_checkable(root):   # an older patch of ours, calling another hook path
        root.chroot([python, VIF_PATCH, "apply", "--hook", older_hook])
        assert older_hook in root.read(root.profile.script)
    upgraded = root.rpm("-Uvh", products["v2"])
    out = upgraded.stdout
    assert "upgrade: every running VIF is re-applied" in out, out
    assert "isolation is OFF" not in out and "stop" not in root.standin_calls()
    assert "vif-rules-%s-2" % dom0root.VERSION in root.installed()
    assert "vif-rules-%s-1" % dom0root.VERSION not in root.installed()
    assert root.read("/etc/sysconfig/vif-rules") == changed
    assert "policy: DROP" in _ebtables_forward(host)[0]
    assert "VRF-vif1.0" in host.netfilter("ebtables-nft", "-t", "nat", "-L")
    assert os.path.exists(root.p("/var/run/vif-rules/vif1.0.json"))
    # the old package's %preun/%postun took nothing away
    assert root.read(HOOK).splitlines()[0] == "#!%s -S" % python
    assert _plugin_get_version(root)["version"] == dom0root.VERSION
    if _patch_checkable(root):   # replaced by the current patch, exactly once
        assert _vif_patch_status(root, python).returncode == 0
        script = root.read(root.profile.script)
        assert script.count(MARKER) == 1 and older_hook not in script and HOOK in script

    # ---- erase
    erased = root.rpm("-e", "vif-rules")
    out = erased.stdout
    assert "guest isolation is OFF" in out and "forward path is OPEN" in out, out
    for path in (HOOK, PLUGIN, "/usr/lib/vif-rules", "/etc/rc.d/init.d/host-rules"):
        assert not os.path.lexists(root.p(path)), path
    with open(root.p(root.profile.script), "rb") as handle:
        assert handle.read() == root.vif_script_bytes, "vif script not restored byte for byte"
    assert root.read("/etc/sysconfig/vif-rules.rpmsave") == changed
    calls = root.standin_calls()
    if root.profile.init == "sysv":
        assert "chkconfig --del host-rules" in calls, calls
    else:
        assert "systemctl disable host-rules.service" in calls, calls
    assert "policy: ACCEPT" in _ebtables_forward(host)[0]
    if not _patch_checkable(root):
        pytest.skip("install/upgrade/erase passed; the vif patch itself not checked: "
                    "patches/vif-patch or the %s fixture is not in the tree yet"
                    % root.profile.generation)


def test_install_refused_without_the_netfilter_packages(tmp_path, products):
    root = dom0root.Dom0Root(tmp_path / "root", dom0root.PROFILES["7.6"])
    os.makedirs(root.path)
    root.create(products["base"])
    root.rpm("-i", products["fakes"]["bash"])
    result = root.rpm("-i", products["v1"], check=False)
    assert result.returncode != 0
    for name in ("iptables", "ebtables", "arptables"):
        assert "%s is needed by vif-rules" % name in result.stderr, result.stderr
    assert root.installed() == ["bash-1.4.21-0.fake"]


SPOOFER = """import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
frame, end, sent = bytes.fromhex(sys.argv[1]), time.time() + float(sys.argv[2]), 0
while time.time() < end and sent < 5000:
    s.send(frame)
    sent += 1
    time.sleep(0.02)
print(sent)
"""


def _reply_times(ping_output):
    """Epoch times of the echo replies in `ping -D` output."""
    times = []
    for line in ping_output.splitlines():
        if line.startswith("[") and "bytes from" in line:
            times.append(float(line[1:line.index("]")]))
    return times


def test_guests_keep_their_network_through_install_and_upgrade(tmp_path, products,
                                                               require_netns):
    """A guest on a real bridge pings the uplink every 20 ms while the RPM is
    installed and upgraded on its host: no gap over a second once the rules
    are in force, and a spoofing guest gets nothing through from then on."""
    import netbed
    from attacks import ATTACKS
    spoof = [a for a in ATTACKS if a.name == "ipv4-source-foreign"][0]
    bed = netbed.NetBed(str(tmp_path / "bed"), backend="legacy")
    os.makedirs(bed.workdir)
    xs = None
    with bed:
        root = dom0root.Dom0Root(tmp_path / "root", dom0root.PROFILES["8.3"], bed.ns("h"))
        os.makedirs(root.path)
        root.create(products["base"], config=OPERATOR_CONFIG)
        root.rpm("-i", *products["fakes"].values())
        try:
            xs = XapiStandin(socket_path=root.p("/var/lib/xcp/xapi")).start()
            host = xs.add_host("host1", uuid=root.host_uuid)
            for guest in bed.guests:
                domid = int(guest.port[3:].split(".")[0])
                vm = xs.add_vm(guest.short, resident_on=host, domid=domid, xenstore_data={
                    "vm-data/networking/" + guest.mac.replace(":", ""): guest.network()})
                xs.add_vif(vm, "0", guest.mac)
            sniffer = bed.observe(["up"], [spoof.marker], seconds=2)
            bed.send("g1", [spoof.frame])
            assert sniffer.counts()["up"][spoof.marker] >= 1, "the open bridge passes the spoof"
            pinger = subprocess.Popen(
                ["ip", "netns", "exec", bed.ns("g1"), "ping", "-D", "-n", "-i", "0.02",
                 "-W", "1", "-c", "4000", netbed.UPLINK_IP],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                start = time.time()
                installed = root.rpm("-i", products["v1"])
                installed_at = time.time()
                assert "3 running VIF(s) protected" in installed.stdout, installed.stdout
                window = max(10.0, 3 * (installed_at - start))
                sniffer = bed.observe(["up"], [spoof.marker], seconds=window)
                spoofer = subprocess.Popen(
                    ["ip", "netns", "exec", bed.ns("g1"), sys.executable, "-c", SPOOFER,
                     spoof.frame.hex(), str(window - 1)], stdout=subprocess.PIPE, text=True)
                root.rpm("-U", products["v2"])
                upgraded_at = time.time()
                time.sleep(0.5)
            finally:
                pinger.send_signal(signal.SIGINT)
                out, _ = pinger.communicate(timeout=30)
            sent = int(spoofer.communicate(timeout=60)[0])
            passed = sniffer.counts()["up"][spoof.marker]
        finally:
            if xs is not None:
                xs.stop()
    assert upgraded_at < installed_at + window - 1, "the upgrade outlasted the spoofing window"
    assert sent > 100 and passed == 0, "%d of %d spoofed frames passed" % (passed, sent)
    replies = _reply_times(out)
    assert replies and replies[-1] >= upgraded_at, "the guest lost the uplink for good"
    during = [t for t in replies if start <= t <= upgraded_at + 0.5]
    gaps = [b - a for a, b in zip(during, during[1:])]
    summary = [l for l in out.splitlines() if "packets transmitted" in l]
    sys.stdout.write("install + upgrade: %.1f s, %d replies, longest gap %.3f s (ping: %s); "
                     "%d spoofed frames, none passed\n" % (
                         upgraded_at - start, len(during), max(gaps),
                         summary and summary[0] or "?", sent))
    assert during and max(gaps) <= 1.0, "longest gap %.2f s" % max(gaps)
