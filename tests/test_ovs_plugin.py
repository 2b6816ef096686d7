"""The XAPI plugin on an Open vSwitch host: a controller drives it through
the real XenAPI SDK and the XAPI stand-in, as on a bridge host, and real
frames through a real userspace Open vSwitch prove the result."""

import os

import pytest

import netbed
import ovsbed
from test_plugin_e2e import PASSWORD, PLUGIN_DIR, Cloud, _spoof_reaches_uplink
from xapi_standin.server import XapiStandin


@pytest.fixture
def ovs_cloud(tmp_path):
    reason = ovsbed.available()
    if reason:
        pytest.skip(reason)
    workdir = str(tmp_path / "bed")
    os.makedirs(workdir)
    with ovsbed.OvsBed(workdir) as bed:
        xs = XapiStandin(plugin_dir=PLUGIN_DIR, password=PASSWORD)
        xs.start()
        try:
            cloud = Cloud(bed, xs, None)
            xs.set_host_plugin_config(cloud.host, plugin_env={
                "VIF_RULES_CONF": bed.conf, "OVS_RUNDIR": bed.rundir})
            yield cloud
        finally:
            xs.stop()


def test_controller_drives_an_openvswitch_host(ovs_cloud):
    cloud = ovs_cloud
    bed = cloud.bed
    assert _spoof_reaches_uplink(bed), "an open switch lets the spoof through"
    setup = cloud.call("setup_host", trusted=netbed.UPLINK_PORT)
    assert setup["trusted"] == [netbed.UPLINK_PORT]
    g1, g2 = bed.guests[0], bed.guests[1]
    for guest in (g1, g2):  # the data from the VM record, as the hook reads it
        result = cloud.call("apply_vif", vif=guest.port)
        assert result["vif"] == guest.port
    assert bed.ping("g1", g2.ipv4[0]) and bed.ping("g1", netbed.UPLINK_IP)
    assert not _spoof_reaches_uplink(bed)
    status = cloud.call("status")
    assert status["protected"], status["missing"]
    assert [v["vif"] for v in status["vifs"]] == ["vif1.0", "vif2.0"]
    assert status["hook"]["state"] in ("unknown", "not-patched", "patched", "changed")
    assert cloud.call("teardown_vif", vif=g1.port)["was_protected"]
    assert not bed.ping("g1", netbed.UPLINK_IP, count=1)
    assert bed.ping("g2", netbed.UPLINK_IP)
    # somebody deletes every flow: status says so, sync puts every running VIF back
    bed.ofctl("del-flows", "xenbr0")
    assert not cloud.call("status")["protected"]
    report = cloud.call("sync")
    assert sorted(report["protected"]) == ["tap3.0", "vif1.0", "vif2.0"]
    assert bed.ping("g1", netbed.UPLINK_IP) and bed.ping("g2", netbed.UPLINK_IP)
    assert not _spoof_reaches_uplink(bed)
    assert cloud.call("status")["protected"]
    assert cloud.failure("apply_vif", vif="vif1.0; rm -rf /")[0] == "VIF_RULES_INVALID_ARGUMENT"
