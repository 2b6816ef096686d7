"""`host-rules check` on a real Open vSwitch: dom0's own uplink.

On Open vSwitch only trusted ports forward, so a management bridge whose
uplink is not in TRUSTED_INTERFACES would lose dom0's own network at start:
the check must say so before anyone runs start."""

import pytest

import ovsbed
from netbed import BRIDGE, UPLINK_PORT


@pytest.fixture
def ovs(tmp_path, require_netns):
    reason = ovsbed.available()
    if reason:
        pytest.skip(reason)
    with ovsbed.OvsBed(str(tmp_path)) as bed:
        yield bed


def _check(bed, inventory, **config):
    bed.write_config(XENSOURCE_INVENTORY=str(inventory), **config)
    result = bed.host_rules("check", check=False)
    lines = [line for line in result.stdout.splitlines() if "management uplink" in line]
    assert len(lines) == 1, result.stdout
    return result.returncode, lines[0]


def test_check_says_when_the_management_uplink_is_not_trusted(ovs, tmp_path):
    inventory = tmp_path / "xensource-inventory"
    inventory.write_text("INSTALLATION_UUID='0b7e1d5a-0000-4000-8000-000000000001'\n"
                         "MANAGEMENT_INTERFACE='%s'\n" % BRIDGE)
    status, line = _check(ovs, inventory)  # the bed trusts its uplink
    assert line.startswith("[ OK ]") and UPLINK_PORT in line, line
    status, line = _check(ovs, inventory, TRUSTED_INTERFACES="")
    assert status == 1
    assert line.startswith("[FAIL]") and UPLINK_PORT in line and "TRUSTED_INTERFACES" in line
    # The guest ports on the bridge are never taken for uplinks.
    assert "vif1.0" not in line and "tap3.0" not in line


def test_check_cannot_tell_without_a_management_bridge(ovs, tmp_path):
    inventory = tmp_path / "xensource-inventory"
    inventory.write_text("MANAGEMENT_INTERFACE='xenbr9'\n")
    status, line = _check(ovs, inventory)
    assert line.startswith("[ ?? ]") and "xenbr9" in line, line
    inventory.write_text("INSTALLATION_UUID='0b7e1d5a-0000-4000-8000-000000000001'\n")
    status, line = _check(ovs, inventory)
    assert line.startswith("[SKIP]"), line
