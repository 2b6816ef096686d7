"""A controller drives the plugin through the real XenAPI SDK and a XAPI
stand-in that runs it exactly as XAPI does; real frames prove the result."""

import json
import os

import pytest
import XenAPI

import attacks
import netbed
from test_lifecycle import PYTHONS
from xapi_standin.server import XapiStandin

TOP = netbed.TOP
PLUGIN_DIR = os.path.join(TOP, "xapi-plugin")
PASSWORD = "s3cret"


class Cloud(object):
    """A bed, a stand-in XAPI with the bed's guests as running VMs, and a
    controller session over HTTP."""

    def __init__(self, bed, xs, python):
        self.bed, self.xs = bed, xs
        self.host = xs.add_host("host1", python_for_plugins=bed.python_in_host(python),
                                plugin_env={"VIF_RULES_CONF": bed.conf})
        bed.write_config(XENSOURCE_INVENTORY=xs.inventory_path(self.host),
                         XAPI_SOCKET=xs.socket_path)
        self.vms = {}
        for guest in bed.guests:
            domid = int(guest.port[3:].split(".")[0])
            vm = xs.add_vm(guest.short, resident_on=self.host, domid=domid, xenstore_data={
                "vm-data/networking/" + guest.mac.replace(":", ""): guest.network()})
            xs.add_vif(vm, "0", guest.mac)
            self.vms[guest.port] = vm
        self.session = XenAPI.Session(xs.url)
        self.session.xenapi.login_with_password("root", PASSWORD, "1.0", "vif-rules-tests")
        self.host_ref = self.session.xenapi.host.get_all()[0]

    def call(self, fn, **args):
        return json.loads(self.session.xenapi.host.call_plugin(self.host_ref, "vif_rules", fn, args))

    def failure(self, fn, **args):
        with pytest.raises(XenAPI.Failure) as raised:
            self.session.xenapi.host.call_plugin(self.host_ref, "vif_rules", fn, args)
        return raised.value.details


@pytest.fixture
def cloud_for(tmp_path, require_netns):
    made = []

    def make(python=None):
        bed = netbed.NetBed(str(tmp_path / ("bed%d" % len(made))), backend="legacy")
        os.makedirs(bed.workdir)
        bed.__enter__()
        made.append(bed)
        xs = XapiStandin(plugin_dir=PLUGIN_DIR, password=PASSWORD)
        xs.start()
        made.append(xs)
        return Cloud(bed, xs, python)

    yield make
    for thing in reversed(made):
        if isinstance(thing, XapiStandin):
            thing.stop()
        else:
            thing.destroy()


@pytest.fixture
def cloud(cloud_for):
    return cloud_for()


def _spoof_reaches_uplink(bed):
    attack = [a for a in attacks.ATTACKS if a.name == "ipv4-source-foreign"][0]
    sniffers = bed.observe(["up"], [attack.marker])
    bed.send("g1", [attack.frame])
    return sniffers.counts()["up"][attack.marker] > 0


def test_controller_protects_two_vms_end_to_end(cloud):
    bed = cloud.bed
    assert cloud.call("get_version")["api_version"] == "1.0"
    assert _spoof_reaches_uplink(bed), "an open bridge lets the spoof through"
    setup = cloud.call("setup_host", trusted=netbed.UPLINK_PORT)
    assert setup["trusted"] == [netbed.UPLINK_PORT]
    g1, g2 = bed.guests[0], bed.guests[1]
    for guest in (g1, g2):
        result = cloud.call("apply_vif", vif=guest.port, network=guest.network())
        assert result["mac"] == guest.mac and result["ipv4"] == guest.ipv4
    assert bed.ping("g1", g2.ipv4[0]) and bed.ping("g1", netbed.UPLINK_IP)
    assert not _spoof_reaches_uplink(bed)
    status = cloud.call("status")
    assert status["protected"], status["missing"]
    assert [v["vif"] for v in status["vifs"]] == ["vif1.0", "vif2.0"]
    assert status["vifs"][0]["dropped"]["from_guest"]["ebtables"] >= 1
    assert cloud.call("teardown_vif", vif=g1.port)["was_protected"]
    assert not bed.ping("g1", netbed.UPLINK_IP, count=1)
    assert bed.ping("g2", netbed.UPLINK_IP)
    # the plugin really ran as XAPI runs it: by name, one argv with the methodCall
    run = cloud.xs.plugin_calls[-1]
    assert run["plugin"] == "vif_rules" and run["fn"] == "teardown_vif"


def test_apply_without_network_reads_the_vm_record_not_guest_data(cloud, tmp_path):
    """The guest can write /local/domain/<domid>/vm-data: the plugin must not read it."""
    bed = cloud.bed
    fake_bin = tmp_path / "fake-xenstore"
    fake_bin.mkdir()
    log = tmp_path / "xenstore-calls.log"
    attacker = json.dumps({"mac": bed.guests[0].mac,
                           "ips": [{"ip": attacks.FOREIGN_IP, "enabled": "1"}]})
    for tool in ("xenstore-read", "xenstore-ls", "xenstore-list", "xenstore"):
        script = fake_bin / tool
        script.write_text("#!/bin/sh\necho $0 >> %s\necho '%s'\n" % (log, attacker))
        script.chmod(0o755)
    cloud.xs.set_host_plugin_config(cloud.host, plugin_env={
        "VIF_RULES_CONF": bed.conf, "PATH": "%s:/usr/sbin:/usr/bin:/sbin:/bin" % fake_bin})
    cloud.call("setup_host")
    result = cloud.call("apply_vif", vif="vif1.0")
    assert result["ipv4"] == bed.guests[0].ipv4
    assert attacks.FOREIGN_IP not in bed.ruleset()
    assert not log.exists(), "the plugin consulted xenstore"
    assert bed.ping("g1", netbed.UPLINK_IP)
    # the same lookup from the vif hook, over XAPI's local socket; it logs out
    sessions = len(cloud.xs._sessions)
    result = bed.hook("online", "vif2.0")
    assert len(cloud.xs._sessions) == sessions
    assert json.loads(result.stdout)["vif"] == "vif2.0"
    assert bed.ping("g2", netbed.UPLINK_IP)
    # a VM record without data for the NIC: a clear error, nothing applied
    cloud.xs.set_xenstore_data(cloud.vms["vif2.0"], {})
    assert cloud.failure("apply_vif", vif="vif2.0")[0] == "VIF_RULES_NO_NETWORK_DATA"
    assert cloud.failure("apply_vif", vif="vif9.0")[0] == "VIF_RULES_NO_NETWORK_DATA"


def test_sync_removes_dead_domains_and_reprotects_after_a_flush(cloud):
    bed = cloud.bed
    cloud.call("setup_host")
    for guest in bed.guests:
        cloud.call("apply_vif", vif=guest.port)
    # domain 2 dies without an offline event
    cloud.xs.remove_vm(cloud.vms["vif2.0"])
    report = cloud.call("sync")
    assert report["removed"] == ["vif2.0"]
    assert "VRF-vif2.0" in report["removed_chains"]
    assert "vif2.0" not in bed.ruleset()
    assert sorted(report["protected"]) == ["tap3.0", "vif1.0"]
    # somebody flushes every table
    for command in (["iptables-legacy", "-F"], ["iptables-legacy", "-X"],
                    ["iptables-legacy", "-P", "FORWARD", "ACCEPT"],
                    ["ebtables-nft", "-F"], ["ebtables-nft", "-X"],
                    ["ebtables-nft", "-P", "FORWARD", "ACCEPT"],
                    ["ebtables-nft", "-t", "nat", "-F"], ["ebtables-nft", "-t", "nat", "-X"]):
        bed.run("h", command)
    assert _spoof_reaches_uplink(bed), "the flush opened the host"
    assert not cloud.call("status")["protected"]
    report = cloud.call("sync")
    assert sorted(report["protected"]) == ["tap3.0", "vif1.0"]
    assert not _spoof_reaches_uplink(bed)
    assert bed.ping("g1", netbed.UPLINK_IP) and bed.ping("g3", netbed.UPLINK_IP)
    assert cloud.call("status")["protected"]


BAD_CALLS = [
    ("missing vif", "apply_vif", {}, "vif"),
    ("shell in vif", "apply_vif", {"vif": "vif5.0; rm -rf /"}, "vif5.0; rm -rf /"),
    ("bad IP", "apply_vif", {"vif": "vif1.0", "network": json.dumps(
        {"mac": "02:00:00:00:00:01", "ips": [{"ip": "300.1.1.1", "enabled": "1"}]})}, "300.1.1.1"),
    ("bad MAC", "apply_vif", {"vif": "vif1.0", "network": '{"mac": "zz:00:00:00:00:01"}'},
     "zz:00:00:00:00:01"),
    ("JSON not an object", "apply_vif", {"vif": "vif1.0", "network": "[1, 2]"}, "network"),
    ("JSON broken", "apply_vif", {"vif": "vif1.0", "network": "{"}, "network"),
    ("unknown argument", "apply_vif", {"vif": "vif1.0", "firewall": "off"}, "firewall"),
    ("unknown key in network", "apply_vif", {"vif": "vif1.0", "network": json.dumps(
        {"mac": "02:00:00:00:00:01", "allow_all": "1"})}, "allow_all"),
    ("leading dash", "teardown_vif", {"vif": "-F"}, "-F"),
    ("bad trusted uplink", "setup_host", {"trusted": "eth0 vif1.0"}, "vif1.0"),
    ("argument to get_version", "get_version", {"x": "1"}, "x"),
]


@pytest.mark.parametrize("case", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_arguments_get_the_documented_failure_and_change_nothing(cloud, case):
    bed = cloud.bed
    cloud.call("setup_host")
    cloud.call("apply_vif", vif="vif1.0")
    before = bed.ruleset()
    details = cloud.failure(case[1], **case[2])
    assert details[0] == "VIF_RULES_INVALID_ARGUMENT"
    assert details[1:] and case[3] in " ".join(details[1:3])
    assert bed.ruleset() == before


def test_unknown_function_is_xapis_error(cloud):
    assert cloud.failure("flush_everything")[0] == "UNKNOWN_XENAPI_PLUGIN_FUNCTION"


@pytest.mark.parametrize("version", sorted(PYTHONS))
def test_plugin_runs_under_each_dom0_python(cloud_for, version):
    python = PYTHONS[version]
    if not os.path.exists(python):
        pytest.skip("%s is not installed at %s" % (version, python))
    cloud = cloud_for(python)
    bed = cloud.bed
    assert cloud.call("get_version")["api_version"] == "1.0"
    cloud.call("setup_host")
    cloud.call("apply_vif", vif="vif1.0")
    cloud.call("apply_vif", vif="vif2.0", network=bed.guests[1].network())
    assert bed.ping("g1", bed.guests[1].ipv4[0])
    assert cloud.call("status")["protected"]
    assert cloud.failure("apply_vif", vif="vif1.0", network="{")[0] == "VIF_RULES_INVALID_ARGUMENT"
    report = cloud.call("sync")
    assert sorted(report["protected"]) == ["tap3.0", "vif1.0", "vif2.0"]
    cloud.call("teardown_vif", vif="vif1.0")
    assert not bed.ping("g1", netbed.UPLINK_IP, count=1)
    assert "python-in-host" in cloud.xs.plugin_calls[-1]["argv"][0]
