"""Pure parts of the Open vSwitch backend: backend choice, the listings it
reads, the transactions it writes."""

import os

import pytest

from vifrules import backend, openflow, policy
from vifrules.addresses import NicAddresses, VifName
from vifrules.config import Config
from vifrules.engine import Engine
from vifrules.errors import ConfigError
from vifrules.ovs import OvsEngine, parse_flows, parse_listing


def _root(tmp_path, network=None, inventory=False, module=False):
    root = str(tmp_path)
    for path, wanted, text in (("etc/xensource/network.conf", network, network),
                               ("etc/xensource-inventory", inventory, "BUILD_NUMBER=1\n")):
        if wanted:
            os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
            with open(os.path.join(root, path), "w") as handle:
                handle.write(text + "\n")
    if module:
        os.makedirs(os.path.join(root, "sys/module/openvswitch"))
    return root


@pytest.mark.parametrize("network,inventory,module,expected", [
    ("bridge", True, True, backend.BRIDGE),
    ("openvswitch", True, False, backend.OPENVSWITCH),
    ("vswitch", False, False, backend.OPENVSWITCH),
    (None, True, True, backend.OPENVSWITCH),   # 6.5+ without network.conf
    (None, True, False, backend.BRIDGE),
    (None, False, True, backend.BRIDGE),       # not a XenServer host: a plain bridge
    ("nonsense", True, True, None),
])
def test_backend_detected_as_xenserver_does(tmp_path, network, inventory, module, expected):
    root = _root(tmp_path, network, inventory, module)
    assert backend.detect(Config(), root)[0] == expected


def test_configuration_overrides_and_is_checked(tmp_path):
    root = _root(tmp_path, "openvswitch", True)
    assert backend.chosen(Config({"BACKEND": "bridge"}), root)[0] == backend.BRIDGE
    with pytest.raises(ConfigError):
        backend.chosen(Config({"BACKEND": "ovs"}), root)


def test_engine_for_gives_the_engine_of_the_backend(tmp_path):
    base = {"STATE_DIR": str(tmp_path / "state"), "LOCK_FILE": str(tmp_path / "lock")}
    assert isinstance(backend.engine_for(Config(dict(base, BACKEND="openvswitch"))), OvsEngine)
    assert isinstance(backend.engine_for(Config(dict(base, BACKEND="bridge"))), Engine)
    for name in ("apply_vif", "teardown_vif", "setup_host", "stop_host", "sync", "status"):
        assert callable(getattr(OvsEngine, name)) and callable(getattr(Engine, name))


LISTING = """br0,uuid-p1 uuid-p2 uuid-p3
br1,uuid-p4

uuid-p1,vif1.0,uuid-i1
uuid-p2,eth1,uuid-i2
uuid-p3,br0,uuid-i3
uuid-p4,tap3.0,uuid-i4

uuid-i1,vif1.0,5
uuid-i2,eth1,1
uuid-i3,br0,65534
uuid-i4,tap3.0,[]
"""


def test_listing_finds_each_port_on_its_bridge():
    switch = parse_listing(LISTING)
    assert switch.bridges == ["br0", "br1"]
    assert switch.port("vif1.0") == ("br0", 5)
    assert switch.port("tap3.0") is None  # no port number yet
    assert switch.ports_on("br0", ["eth1", "eth9"]) == [1]
    assert switch.managed(["eth1"]) == ["br0"]


def test_flow_dump_is_read_with_table_zero_unsaid():
    text = ("NXST_FLOW reply (xid=0x4):\n"
            " cookie=0x5652000000004000, duration=1.2s, n_packets=7, n_bytes=0, "
            "priority=30000,in_port=2 actions=resubmit(,1)\n"
            " cookie=0x5652000100000000, duration=1.2s, table=4, n_packets=3, n_bytes=9, "
            "idle_age=1, priority=0 actions=output:1,LOCAL\n")
    assert parse_flows(text) == [(0x5652000000004000, 0, 7, 30000, "in_port=2"),
                                 (0x5652000100000000, 4, 3, 0, "")]


def test_one_transaction_replaces_by_cookie_and_port_only():
    vif = VifName("vif1.0")
    guest = policy.guest_policy(NicAddresses("02:00:00:00:00:01", ["192.0.2.11"], []))
    text = openflow.vif_bundle(vif, 5, guest, openflow.host_flows([1]),
                               openflow.shared_changes(openflow.delivery_keys(guest),
                                                       [(5, openflow.delivery_keys(guest))]))
    lines = text.splitlines()
    deletes = [l for l in lines if l.startswith("delete")]
    assert deletes[0] == "delete cookie=0x5652000000004000/-1"
    for line in deletes:  # every delete is bounded by a cookie of ours
        assert "cookie=0x5652" in line and ("/-1" in line or "/0xffff000000000000" in line)
    assert [l for l in lines if "in_port=5" in l and l.startswith("add")]
    adds = [l for l in lines if l.startswith("add ")]
    assert adds and len(adds) + len(deletes) == len(lines)
    teardown = openflow.vif_bundle(vif, None, None, openflow.host_flows([1]),
                                   openflow.shared_changes(openflow.delivery_keys(guest), []))
    assert "0x5652000000004000" not in "".join(l for l in teardown.splitlines()
                                              if l.startswith("add"))
    assert [l for l in teardown.splitlines() if l.startswith("delete_strict")]
