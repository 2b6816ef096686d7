"""The controller-side client (client/vif_rules_client) against the XAPI
stand-in, over the real XML-RPC path with the real XenAPI package.

The plugin behind the stand-in is a fake `vif_rules` written by these
tests (the real one needs netfilter and namespaces): same functions, same
JSON, same Failure codes, with a JSON state file per host that the tests
read and change (protected or not, VIFs on record, failures to inject,
a delay, a plugin API version)."""

import io
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import XenAPI

TESTS = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(TESTS)
CLIENT = os.path.join(TOP, "client")
sys.path.insert(0, CLIENT)
sys.path.insert(0, TESTS)

import vif_rules_client as vrc  # noqa: E402
from vif_rules_client import errors as vrc_errors  # noqa: E402
from vif_rules_client.api import VifRulesClient, audit  # noqa: E402
from xapi_standin.server import XapiStandin  # noqa: E402

PASSWORD = "pw-Secret"
MAC_A = "02:00:00:00:07:00"
MAC_B = "02:00:00:00:07:01"
MAC_C = "02:00:00:00:09:00"
MAC_D = "02:00:00:00:03:00"

FAKE_PLUGIN = r'''#!/usr/bin/env python3
"""Fake vif_rules plugin for the client tests: the real plugin's functions,
results and Failure codes over a JSON state file (FAKE_VIF_RULES_STATE)."""
import json
import os
import re
import sys
import time

import XenAPIPlugin

STATE = os.environ["FAKE_VIF_RULES_STATE"]
HOST = os.environ["XAPI_STANDIN_HOST_REF"]
NAME = re.compile(r"^(vif|tap)([0-9]{1,5})\.([0-9]{1,4})$")
PREFIX = "vm-data/networking/"


def load():
    with open(STATE) as f:
        return json.load(f)


def save(state):
    tmp = STATE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, STATE)


def fail(code, *params):
    raise XenAPIPlugin.Failure(code, [str(p) for p in params])


def prologue(fn, args, required, optional):
    state = load()
    state.setdefault("log", []).append([fn, args])
    save(state)
    time.sleep(float(state.get("delay", 0)))
    barrier = state.get("barrier")
    if barrier and fn == barrier["fn"]:
        # A rendezvous: every host's call must be running at once, which only
        # a parallel audit achieves; a serial one leaves each call alone.
        open(os.path.join(barrier["dir"], os.path.basename(STATE)), "w").close()
        deadline = time.time() + barrier["seconds"]
        while time.time() < deadline and len(os.listdir(barrier["dir"])) < barrier["count"]:
            time.sleep(0.05)
        state = load()
        state["met_at_barrier"] = len(os.listdir(barrier["dir"])) >= barrier["count"]
        save(state)
    injected = state.get("fail", {}).get(fn) or state.get("fail", {}).get("*")
    if injected:
        if injected[0] == "CRASH":
            raise RuntimeError("injected crash")
        if injected[0] == "EXIT":
            sys.stderr.write("dying\n")
            sys.exit(3)
        if injected[0] == "GARBAGE":
            return state, "this is not JSON"
        fail(*injected)
    for name in args:
        if name not in required and name not in optional:
            fail("VIF_RULES_INVALID_ARGUMENT", name, args[name], "unknown argument")
    for name in required:
        if not args.get(name):
            fail("VIF_RULES_INVALID_ARGUMENT", name, "", "missing")
    if "vif" in args and not NAME.match(args["vif"]):
        fail("VIF_RULES_INVALID_ARGUMENT", "vif", args["vif"],
             "expected vif<domid>.<devid> or tap<domid>.<devid>")
    return state, None


def nic(text, vif):
    try:
        data = json.loads(text)
    except ValueError:
        fail("VIF_RULES_INVALID_ARGUMENT", "network", text[:200], "not valid JSON")
    if not isinstance(data, dict) or "mac" not in data:
        fail("VIF_RULES_INVALID_ARGUMENT", "network", text[:200], "must be a JSON object with mac")
    def ips(key):
        return [e["ip"] for e in data.get(key, []) if str(e.get("enabled", "1")) == "1"]
    return {"mac": data["mac"].lower(), "ipv4": ips("ips"), "ipv6": ips("ip6s")}


def running(session):
    """{vif name: nic or None} of the guests running on this host."""
    where = 'field "resident_on" = "%s" and field "power_state" = "Running"' % HOST
    result = {}
    for ref, vm in session.xenapi.VM.get_all_records_where(where).items():
        if vm["is_control_domain"]:
            continue
        for vif_ref in vm["VIFs"]:
            vif = session.xenapi.VIF.get_record(vif_ref)
            text = vm["xenstore_data"].get(PREFIX + vif["MAC"].replace(":", "").lower())
            name = "vif%s.%s" % (vm["domid"], vif["device"])
            result[name] = text and nic(text, name)
    return result


def get_version(session, args):
    state, garbage = prologue("get_version", args, (), ())
    return garbage or json.dumps({"api_version": state.get("api_version", "1.0"),
                                  "version": "1.0.0-fake"})


def setup_host(session, args):
    state, garbage = prologue("setup_host", args, (), ("trusted",))
    if garbage:
        return garbage
    state["protected"] = True
    state["missing"] = []
    if "trusted" in args:
        state["trusted"] = args["trusted"].split(",")
    save(state)
    return json.dumps({"protected": True, "trusted": state.get("trusted", [])})


def apply_vif(session, args):
    state, garbage = prologue("apply_vif", args, ("vif",), ("network",))
    if garbage:
        return garbage
    name = args["vif"]
    if "network" in args:
        data = nic(args["network"], name)
    else:
        m = NAME.match(name)
        found = running(session).get("vif%s.%s" % (m.group(2), m.group(3)), 0)
        if found == 0:
            fail("VIF_RULES_NO_NETWORK_DATA", name, "no running VM with domid %s on this host" % m.group(2))
        if not found:
            fail("VIF_RULES_NO_NETWORK_DATA", name, "no vm-data/networking for its MAC")
        data = found
    replaced = name in state["vifs"]
    state["vifs"][name] = data
    save(state)
    result = dict(data)
    result.update(vif=name, replaced=replaced)
    return json.dumps(result)


def teardown_vif(session, args):
    state, garbage = prologue("teardown_vif", args, ("vif",), ())
    if garbage:
        return garbage
    was = state["vifs"].pop(args["vif"], None) is not None
    save(state)
    return json.dumps({"vif": args["vif"], "was_protected": was})


def status(session, args):
    state, garbage = prologue("status", args, (), ("vif",))
    if garbage:
        return garbage
    vifs = []
    for name in sorted(state["vifs"]):
        if "vif" in args and args["vif"] != name:
            continue
        entry = dict(state["vifs"][name])
        entry.update(vif=name, dropped={"ipv4-source": 0, "arp": 1})
        vifs.append(entry)
    return json.dumps({"protected": state["protected"], "missing": state["missing"],
                       "trusted": state.get("trusted", []), "vifs": vifs})


def sync(session, args):
    state, garbage = prologue("sync", args, (), ())
    if garbage:
        return garbage
    now = running(session)
    result = {"removed": [], "applied": [], "unchanged": [], "without_data": [],
              "removed_chains": [], "protected": []}
    for name in sorted(state["vifs"]):
        if name not in now:
            del state["vifs"][name]
            result["removed"].append(name)
    for name in sorted(now):
        data = now[name]
        if data is None:
            key = name in state["vifs"] and "unchanged" or "without_data"
            result[key].append(name)
        elif state["vifs"].get(name) == data:
            result["unchanged"].append(name)
        else:
            state["vifs"][name] = data
            result["applied"].append(name)
    result["protected"] = sorted(state["vifs"])
    save(state)
    return json.dumps(result)


TABLE = {"get_version": get_version, "setup_host": setup_host, "apply_vif": apply_vif,
         "teardown_vif": teardown_vif, "status": status, "sync": sync}

if __name__ == "__main__":
    for name in load().get("disabled", []):
        TABLE.pop(name, None)
    XenAPIPlugin.dispatch(TABLE)
'''


def nova(mac, ipv4=(), ipv6=()):
    return {"label": "public", "mac": mac, "broadcast": "10.0.0.255",
            "gateway": "10.0.0.1", "dns": ["10.0.0.1"],
            "ips": [{"ip": ip, "netmask": "255.255.255.0", "enabled": "1"} for ip in ipv4],
            "ip6s": [{"ip": ip, "netmask": 64, "enabled": "1"} for ip in ipv6]}


def networking(mac, ipv4=(), ipv6=()):
    return {"vm-data/networking/" + mac.replace(":", ""): json.dumps(nova(mac, ipv4, ipv6))}


class Pool:
    """Three hosts; host1 runs g7 (domid 7, two VIFs) and g3 (domid 3),
    host2 runs g9 (domid 9), host3 runs nothing; 'halted' is Halted."""

    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.plugins = tmp_path / "plugins"
        self.plugins.mkdir()
        plugin = self.plugins / "vif_rules"
        plugin.write_text(FAKE_PLUGIN)
        plugin.chmod(0o755)
        self.xs = XapiStandin(plugin_dir=str(self.plugins), password=PASSWORD,
                              plugin_timeout=60)
        self.xs.start()
        self.hosts, self.states = {}, {}
        for name in ("host1", "host2", "host3"):
            state = tmp_path / ("state-%s.json" % name)
            state.write_text(json.dumps({"protected": True, "missing": [], "vifs": {},
                                         "trusted": ["eth0"]}))
            self.states[name] = state
            self.hosts[name] = self.xs.add_host(
                name, python_for_plugins=sys.executable,
                plugin_env={"FAKE_VIF_RULES_STATE": str(state)})
        h1, h2 = self.hosts["host1"], self.hosts["host2"]
        data = dict(networking(MAC_A, ["10.0.0.7"], ["2001:db8::7"]))
        data.update(networking(MAC_B, ["10.0.1.7"]))
        self.g7 = self.xs.add_vm("g7", resident_on=h1, domid=7, xenstore_data=data)
        self.xs.add_vif(self.g7, "1", MAC_B)
        self.xs.add_vif(self.g7, "0", MAC_A.upper())
        self.g3 = self.xs.add_vm("g3", resident_on=h1, domid=3,
                                 xenstore_data=networking(MAC_D, ["10.0.0.3"]))
        self.xs.add_vif(self.g3, "0", MAC_D)
        self.g9 = self.xs.add_vm("g9", resident_on=h2, domid=9,
                                 xenstore_data=networking(MAC_C, ["10.0.0.9"]))
        self.xs.add_vif(self.g9, "0", MAC_C)
        self.halted = self.xs.add_vm("halted")
        self.xs.add_vif(self.halted, "0", "02:00:00:00:00:99")

    def uuid(self, ref):
        return self.xs.record(ref)["uuid"]

    def state(self, host):
        return json.loads(self.states[host].read_text())

    def set_state(self, host, **changes):
        state = self.state(host)
        state.update(changes)
        self.states[host].write_text(json.dumps(state))

    def calls(self, fn=None):
        """[(host name, fn, args)] of the plugin calls that ran."""
        names = dict((ref, name) for name, ref in self.hosts.items())
        return [(names[c["host"]], c["fn"], c["args"]) for c in self.xs.plugin_calls
                if fn is None or c["fn"] == fn]

    def session(self):
        s = XenAPI.Session(self.xs.url)
        s.xenapi.login_with_password("root", PASSWORD, "1.0", "test_client")
        return s


@pytest.fixture
def pool(tmp_path):
    p = Pool(tmp_path)
    try:
        yield p
    finally:
        p.xs.stop()


@pytest.fixture
def client(pool):
    c = VifRulesClient.connect(pool.xs.url, "root", PASSWORD, timeout=60)
    try:
        yield c
    finally:
        c.close()


# ------------------------------------------------------------ by VM UUID

def test_apply_resolves_host_domid_and_vif_names(pool, client):
    net_b = nova(MAC_B, ["10.9.9.9"])
    done = client.apply(pool.uuid(pool.g7), {MAC_B.upper(): net_b})
    assert (done.host_name, done.host_ref, done.domid) == ("host1", pool.hosts["host1"], 7)
    applied = pool.calls("apply_vif")
    # every call went to g7's host, in device order, with the right names
    assert [(h, a["vif"]) for h, _, a in applied] == [("host1", "vif7.0"), ("host1", "vif7.1")]
    assert "network" not in applied[0][2]                 # the plugin reads the record
    assert json.loads(applied[1][2]["network"]) == net_b  # given data passed as JSON
    # the handshake ran once, before, on that host only
    assert [(h, f) for h, f, _ in pool.calls()][0] == ("host1", "get_version")
    assert len(pool.calls("get_version")) == 1
    assert [r["vif"] for r in done.results] == ["vif7.0", "vif7.1"]
    vifs = pool.state("host1")["vifs"]
    assert vifs["vif7.0"] == {"mac": MAC_A, "ipv4": ["10.0.0.7"], "ipv6": ["2001:db8::7"]}
    assert vifs["vif7.1"]["ipv4"] == ["10.9.9.9"]
    assert pool.state("host2")["vifs"] == {} and pool.state("host3")["vifs"] == {}
    assert done.to_dict()["vm"] == pool.uuid(pool.g7)


def test_apply_on_another_host_and_with_tap_ports(pool, client):
    client.apply(pool.uuid(pool.g9), tap=True)
    assert [(h, a) for h, _, a in pool.calls("apply_vif")] == [
        ("host2", {"vif": "vif9.0"}), ("host2", {"vif": "tap9.0"})]
    assert sorted(pool.state("host2")["vifs"]) == ["tap9.0", "vif9.0"]
    assert pool.state("host1")["vifs"] == {}


def test_apply_refuses_a_mac_the_vm_does_not_have(pool, client):
    with pytest.raises(vrc.InvalidArgument) as raised:
        client.apply(pool.uuid(pool.g9), {"02:00:00:00:00:42": nova("02:00:00:00:00:42")})
    assert raised.value.params[:2] == ["network_by_mac", "02:00:00:00:00:42"]
    assert pool.calls("apply_vif") == []


def test_apply_tries_every_vif_and_raises_the_first_error(pool, client):
    pool.xs.set_xenstore_data(pool.g7, networking(MAC_B, ["10.0.1.7"]))  # none for vif7.0
    with pytest.raises(vrc.NoNetworkData) as raised:
        client.apply(pool.uuid(pool.g7))
    err = raised.value
    assert err.vif == "vif7.0" and err.params[0] == "vif7.0"
    assert err.host == "host1" and err.function == "apply_vif"
    assert [r["vif"] for r in err.completed] == ["vif7.1"]
    assert sorted(pool.state("host1")["vifs"]) == ["vif7.1"]


def test_teardown_status_and_sync_by_vm(pool, client):
    g7, g3 = pool.uuid(pool.g7), pool.uuid(pool.g3)
    client.apply(g7)
    client.apply(g3)
    status = client.status(g7)
    assert status["host"] == "host1" and status["vm"] == g7 and status["domid"] == 7
    assert [v["vif"] for v in status["vifs"]] == ["vif7.0", "vif7.1"]   # not g3's
    assert status["unprotected"] == [] and status["protected"] is True
    assert pool.calls("status")[-1] == ("host1", "status", {})

    down = client.teardown(g7)
    assert [(h, a) for h, _, a in pool.calls("teardown_vif")] == [
        ("host1", {"vif": "vif7.0"}), ("host1", {"vif": "vif7.1"})]
    assert [r["was_protected"] for r in down.results] == [True, True]
    assert client.status(g7)["unprotected"] == ["vif7.0", "vif7.1"]
    assert sorted(pool.state("host1")["vifs"]) == ["vif3.0"]

    # g3 disappears without an offline event: sync on its host removes it
    # and re-applies g7 from its record
    pool.xs.halt_vm(pool.g3)
    result = client.sync(vm_uuid=g7)
    assert pool.calls("sync") == [("host1", "sync", {})]
    assert result["host"] == "host1"
    assert result["removed"] == ["vif3.0"]
    assert result["applied"] == ["vif7.0", "vif7.1"]


def test_status_and_sync_by_host_name_uuid_and_ref(pool, client):
    h2 = pool.hosts["host2"]
    for given in ("host2", pool.uuid(h2), h2):
        assert client.status(host=given)["host_ref"] == h2
    assert [h for h, _, _ in pool.calls("status")] == ["host2"] * 3
    client.apply(pool.uuid(pool.g9))
    assert client.sync("host2")["unchanged"] == ["vif9.0"]
    with pytest.raises(vrc.HostNotFound):
        client.sync("no-such-host")
    with pytest.raises(ValueError):
        client.status()


def test_setup_host_passes_trusted(pool, client):
    pool.set_state("host3", protected=False, missing=["base chains"])
    result = client.setup_host("host3", ["eth0", "bond0"])
    assert pool.calls("setup_host") == [("host3", "setup_host", {"trusted": "eth0,bond0"})]
    assert result["protected"] is True and result["host"] == "host3"
    client.setup_host("host3")
    assert pool.calls("setup_host")[-1][2] == {}


def test_vm_not_running_not_found_or_dom0(pool, client):
    with pytest.raises(vrc.VmNotRunning) as raised:
        client.apply(pool.uuid(pool.halted))
    assert raised.value.params == [pool.uuid(pool.halted), "Halted"]
    assert "Halted" in str(raised.value)
    pool.xs.set_power_state(pool.g9, "Suspended")
    with pytest.raises(vrc.VmNotRunning):
        client.teardown(pool.uuid(pool.g9))
    with pytest.raises(vrc.VmNotFound):
        client.status("00000000-0000-0000-0000-000000000000")
    dom0 = pool.xs.record(pool.hosts["host1"])["control_domain"]
    with pytest.raises(vrc.VmNotFound):
        client.apply(pool.uuid(dom0))
    assert pool.calls() == []


# ------------------------------------------------------------ version

def test_version_handshake(pool, client):
    info = client.version("host2")
    assert (info.host_name, info.api_version, info.major) == ("host2", "1.0", 1)
    pool.set_state("host1", api_version="1.7")
    assert client.version("host1").api_version == "1.7"   # a minor change is fine


@pytest.mark.parametrize("api", ["2.0", "0.9", "x"])
def test_incompatible_major_version_is_refused_before_any_change(pool, client, api):
    pool.set_state("host1", api_version=api)
    with pytest.raises(vrc.IncompatibleVersion) as raised:
        client.apply(pool.uuid(pool.g7))
    assert raised.value.params[:2] == ["host1", api]
    assert raised.value.exit_code == vrc_errors.EXIT_INCOMPATIBLE
    assert [f for _, f, _ in pool.calls()] == ["get_version"]
    assert pool.state("host1")["vifs"] == {}


def test_handshake_can_be_skipped(pool):
    pool.set_state("host2", api_version="2.0")
    s = pool.session()
    client = VifRulesClient(s, check_version=False)
    client.status(host="host2")
    assert [f for _, f, _ in pool.calls()] == ["status"]


# ------------------------------------------------------------ error mapping

PLUGIN_CODES = [
    ("VIF_RULES_INVALID_ARGUMENT", ["vif", "vif5.0; rm", "bad name"], vrc.InvalidArgument, 2),
    ("VIF_RULES_NO_NETWORK_DATA", ["vif9.0", "no data"], vrc.NoNetworkData, 3),
    ("VIF_RULES_HOST_NOT_READY", ["br_netfilter", "modprobe br_netfilter"], vrc.HostNotReady, 4),
    ("VIF_RULES_COMMAND_FAILED", ["ebtables-restore", "1", "oops"], vrc.CommandFailed, 5),
    ("VIF_RULES_LOCK_TIMEOUT", ["/var/lock/vif-rules", "30"], vrc.LockTimeout, 6),
    ("VIF_RULES_BAD_CONFIG", ["/etc/vif-rules.conf", "3", "bad line"], vrc.BadConfig, 7),
    ("VIF_RULES_XAPI_ERROR", ["VM.get_record", "HANDLE_INVALID"], vrc.XapiError, 8),
    ("VIF_RULES_STATE_ERROR", ["/var/run/vif-rules", "read-only"], vrc.StateError, 9),
    ("VIF_RULES_COMMAND_TIMEOUT", ["ebtables-restore", "30"], vrc.CommandTimeout, 10),
]


@pytest.mark.parametrize("code,params,cls,exit_code", PLUGIN_CODES)
def test_each_plugin_code_maps_to_its_exception(pool, client, code, params, cls, exit_code):
    pool.set_state("host2", fail={"apply_vif": [code] + params})
    with pytest.raises(cls) as raised:
        client.apply(pool.uuid(pool.g9))
    err = raised.value
    assert type(err) is cls and isinstance(err, vrc.VifRulesClientError)
    assert err.code == code and err.params == params
    assert err.details == [code] + params
    assert err.exit_code == exit_code
    assert err.host == "host2" and err.function == "apply_vif"
    assert isinstance(err.__cause__, XenAPI.Failure)
    for name, value in zip(cls.param_names, params):
        assert err.param(name) == value


def _dom0_errors():
    sys.path.insert(0, os.path.join(TOP, "xapi-plugin"))
    try:
        from vifrules import errors, plugin
    finally:
        sys.path.remove(os.path.join(TOP, "xapi-plugin"))
    return errors, plugin


def test_the_real_plugins_codes_all_have_a_class():
    errors, plugin = _dom0_errors()
    for code in plugin.ERROR_CODES:
        cls = vrc_errors.FAILURE_CLASSES[code]
        assert cls is not vrc.PluginCrashed and cls.code == code
    assert set(c for c, _, _, _ in PLUGIN_CODES) == set(plugin.ERROR_CODES)


def test_client_classes_are_made_from_the_plugins_table():
    """Not a copy kept in step: the client's module is the plugin's errors.py,
    and each class's code, exit status and param names are its row's."""
    errors, _ = _dom0_errors()
    with open(errors.__file__.replace(".pyc", ".py"), "rb") as dom0:
        with open(vrc_errors.plugin_errors.__file__, "rb") as shipped:
            assert dom0.read() == shipped.read()
    for kind in errors.KINDS:
        cls = vrc_errors.FAILURE_CLASSES[kind.code]
        assert (cls.code, cls.exit_code, cls.param_names) == (
            kind.code, kind.exit_status, kind.param_names)
    assert vrc.InternalError.exit_code == 1


def test_hook_and_client_exit_with_one_status_per_error(pool, tmp_path):
    """The same error, from the vif hook and through the client's command
    line, ends in the same exit status (invalid argument and bad config)."""
    conf = tmp_path / "vif-rules.conf"
    conf.write_text("LOCK_TIMEOUT=soon\n")
    hook = os.path.join(TOP, "xapi-plugin", "vif_rules.py")
    env = dict(os.environ, VIF_RULES_CONF=str(conf))
    for args, code in ((["online", "vif5.x"], "VIF_RULES_INVALID_ARGUMENT"),
                       (["offline", "vif5.0"], "VIF_RULES_BAD_CONFIG")):
        r = subprocess.run([sys.executable, hook] + args, capture_output=True, text=True,
                           env=env, timeout=60)
        assert code in r.stderr, r.stderr
        pool.set_state("host2", fail={"apply_vif": [code, "x", "y", "z"]})
        c = cli(pool, "apply", pool.uuid(pool.g9))
        assert code in c.stderr and c.returncode == r.returncode, (r.stderr, c.stderr)


def test_xapi_codes_and_unknown_codes():
    m = vrc_errors.from_details
    assert type(m(["XENAPI_MISSING_PLUGIN", "vif_rules"])) is vrc.PluginMissing
    assert type(m(["UNKNOWN_XENAPI_PLUGIN_FUNCTION", "sync"])) is vrc.UnknownFunction
    assert type(m(["XENAPI_PLUGIN_FAILURE", "non-zero exit", "", ""])) is vrc.PluginCrashed
    newer = m(["VIF_RULES_SOMETHING_NEW", "a"])
    assert type(newer) is vrc.PluginCrashed and newer.code == "VIF_RULES_SOMETHING_NEW"
    other = m(["HANDLE_INVALID", "VM", "OpaqueRef:x"])
    assert type(other) is vrc.XapiCallFailed and other.params == ["VM", "OpaqueRef:x"]
    assert type(m([])) is vrc.XapiCallFailed


def test_plugin_missing_on_a_host(pool, client, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    pool.xs.set_host_plugin_config(pool.hosts["host2"], plugin_dir=str(empty))
    with pytest.raises(vrc.PluginMissing) as raised:
        client.apply(pool.uuid(pool.g9))
    assert raised.value.params == ["vif_rules"] and raised.value.exit_code == 12


def test_unknown_function(pool, client):
    pool.set_state("host2", disabled=["sync"])
    with pytest.raises(vrc.UnknownFunction) as raised:
        client.sync("host2")
    assert raised.value.params == ["sync"]


@pytest.mark.parametrize("how", ["CRASH", "EXIT"])
def test_plugin_crash(pool, client, how):
    pool.set_state("host2", fail={"status": [how]})
    with pytest.raises(vrc.PluginCrashed) as raised:
        client.status(host="host2")
    assert raised.value.code == "XENAPI_PLUGIN_FAILURE"
    assert raised.value.exit_code == 14


def test_plugin_answer_that_is_not_json(pool, client):
    pool.set_state("host2", fail={"status": ["GARBAGE"]})
    with pytest.raises(vrc.BadResponse) as raised:
        client.status(host="host2")
    assert "not JSON" in raised.value.params[1]


def test_login_and_connection_errors(pool):
    with pytest.raises(vrc.AuthenticationFailed) as raised:
        VifRulesClient.connect(pool.xs.url, "root", "wrong")
    assert raised.value.exit_code == vrc_errors.EXIT_CONNECTION
    with pytest.raises(vrc.ConnectionFailed):
        VifRulesClient.connect("http://127.0.0.1:1", "root", PASSWORD, timeout=5)


# ------------------------------------------------------------ audit

def _progress_lines(text):
    return [line for line in text.splitlines() if line]


def test_audit_three_hosts_one_not_ready(pool, client):
    client.apply(pool.uuid(pool.g7))
    client.apply(pool.uuid(pool.g9))
    pool.xs.halt_vm(pool.g3)
    st = pool.state("host1")
    st["vifs"]["vif3.0"] = {"mac": MAC_D, "ipv4": ["10.0.0.3"], "ipv6": []}  # stale
    pool.states["host1"].write_text(json.dumps(st))
    pool.set_state("host3", fail={"status": ["VIF_RULES_HOST_NOT_READY",
                                             "br_netfilter", "modprobe br_netfilter"]})
    del pool.xs.plugin_calls[:]
    out = io.StringIO()
    summary = audit(client, max_workers=3, progress=out)

    lines = _progress_lines(out.getvalue())
    assert len(lines) == 3
    assert sorted(line[:5] for line in lines) == ["[1/3]", "[2/3]", "[3/3]"]
    by_host = dict((re.match(r"\[\d/3\] (host\d):", l).group(1), l) for l in lines)
    assert by_host["host1"].endswith(
        "host1: protected, 3 VIFs; sync: 1 removed, 0 applied, 2 unchanged, 0 without data"
        " -> 2 VIFs")
    assert "host2: protected, 1 VIF;" in by_host["host2"]
    assert by_host["host3"].endswith("host3: ERROR VIF_RULES_HOST_NOT_READY "
                                     "(what=br_netfilter, how=modprobe br_netfilter) in status")

    assert (summary.total, summary.ok, summary.not_protected, summary.errors) == (3, 2, 0, 1)
    assert summary.vifs == 4 and summary.sync_total("removed") == 1
    assert not summary.all_ok
    h3 = [h for h in summary.hosts if h.host_name == "host3"][0]
    assert isinstance(h3.error, vrc.HostNotReady) and h3.state == "error"
    assert h3.error.params == ["br_netfilter", "modprobe br_netfilter"]
    assert [h.host_name for h in summary.hosts] == ["host1", "host2", "host3"]
    # each host: handshake, status, then sync (not after a failed status)
    calls = pool.calls()
    for host, expected in (("host1", ["get_version", "status", "sync"]),
                           ("host2", ["get_version", "status", "sync"]),
                           ("host3", ["get_version", "status"])):
        assert [f for h, f, _ in calls if h == host] == expected
    text = str(summary)
    assert "3 hosts" in text and "2 ok, 0 not protected, 1 errors" in text
    assert "sync: 1 removed" in text and "host3: ERROR" in text
    d = summary.to_dict()
    assert json.loads(json.dumps(d))["errors"] == 1
    assert d["hosts"][2]["error"]["code"] == "VIF_RULES_HOST_NOT_READY"


def test_audit_runs_hosts_in_parallel_with_a_session_per_worker(pool, tmp_path):
    barrier_dir = tmp_path / "barrier"
    barrier_dir.mkdir()
    for name in pool.hosts:
        pool.set_state(name, barrier={"fn": "status", "dir": str(barrier_dir),
                                      "count": len(pool.hosts), "seconds": 20})
    pool.set_state("host2", protected=False, missing=["sysctl net.bridge.x is 0, not 1"])
    s = pool.session()          # a bare XenAPI.Session: the audit clones its login
    seen = []
    summary = audit(s, max_workers=3, sync=False,
                    progress=lambda done, total, h: seen.append((done, total, h.host_name)))
    for name in pool.hosts:
        assert pool.state(name).get("met_at_barrier") is True, "%s ran alone" % name
    assert sorted(d for d, _, _ in seen) == [1, 2, 3] and all(t == 3 for _, t, _ in seen)
    assert [f for _, f, _ in pool.calls()].count("sync") == 0
    assert (summary.ok, summary.not_protected, summary.errors) == (2, 1, 0)
    host2 = [h for h in summary.hosts if h.host_name == "host2"][0]
    assert "NOT PROTECTED" in host2.line() and "sysctl" in host2.line()
    sessions = set(c["session"] for c in pool.xs.plugin_calls)
    assert len(sessions) == 3 and s.handle not in sessions
    assert s.xenapi.host.get_all()      # the caller's session still works


def test_audit_of_chosen_hosts_and_incompatible_host(pool, client):
    pool.set_state("host1", api_version="3.0")
    summary = audit(client, hosts=["host1", "host3"], sync=False)
    assert [h.host_name for h in summary.hosts] == ["host1", "host3"]
    assert isinstance(summary.hosts[0].error, vrc.IncompatibleVersion)
    assert summary.hosts[1].state == "ok"
    assert "host2" not in [h for h, _, _ in pool.calls()]


# ------------------------------------------------------------ command line

def cli(pool, *args, password=PASSWORD, env=None, stdin=None, python=None, prog=None):
    pwfile = pool.dir / "password"
    if password is not None:
        pwfile.write_text(password + "\n")
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": CLIENT,
                "LC_ALL": "C.UTF-8"}
    full_env.update(env or {})
    base = [prog] if prog else [python or sys.executable, "-m", "vif_rules_client.cli"]
    conn = ["--url", pool.xs.url, "--user", "root"]
    if password is not None:
        conn += ["--password-file", str(pwfile)]
    return subprocess.run(base + conn + list(args), env=full_env, input=stdin,
                          capture_output=True, text=True, timeout=90, cwd=str(pool.dir))


def test_cli_apply_status_teardown(pool):
    g7 = pool.uuid(pool.g7)
    net = json.dumps(nova(MAC_B, ["10.5.5.5"]))
    r = cli(pool, "apply", g7, "--network", "%s=%s" % (MAC_B, net))
    assert r.returncode == 0, r.stderr
    assert "applied vif7.0 on host1: mac %s ipv4 10.0.0.7" % MAC_A in r.stdout
    assert "applied vif7.1 on host1: mac %s ipv4 10.5.5.5" % MAC_B in r.stdout
    assert [(h, a["vif"]) for h, _, a in pool.calls("apply_vif")] == [
        ("host1", "vif7.0"), ("host1", "vif7.1")]

    r = cli(pool, "status", g7, "--json")
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["host"] == "host1" and [v["vif"] for v in status["vifs"]] == ["vif7.0", "vif7.1"]

    r = cli(pool, "status", "--host", "host1")
    assert r.returncode == 0 and r.stdout.startswith("host1: protected, 2 VIFs")

    r = cli(pool, "teardown", g7, "--json")
    assert r.returncode == 0, r.stderr
    assert [x["was_protected"] for x in json.loads(r.stdout)["results"]] == [True, True]
    assert pool.state("host1")["vifs"] == {}


def test_cli_sync_version_and_password_from_env(pool):
    pool.xs.set_xenstore_data(pool.g9, networking(MAC_C, ["10.0.0.99"]))
    r = cli(pool, "sync", "host2", password=None, env={"VIF_RULES_PASSWORD": PASSWORD})
    assert r.returncode == 0, r.stderr
    assert "host2: sync done" in r.stdout and "applied: vif9.0" in r.stdout
    r = cli(pool, "--json", "version")
    assert r.returncode == 0, r.stderr
    assert [v["host"] for v in json.loads(r.stdout)] == ["host1", "host2", "host3"]
    r = cli(pool, "version", "host3")
    assert r.stdout.strip() == "host3: api 1.0, plugin 1.0.0-fake"
    r = cli(pool, "--password-file", "-", "version", "host1", password=None,
            stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "host1: api 1.0, plugin 1.0.0-fake"


def test_cli_exit_codes(pool):
    pool.set_state("host2", fail={"apply_vif": ["VIF_RULES_HOST_NOT_READY", "x", "y"]})
    r = cli(pool, "apply", pool.uuid(pool.g9), "--json")
    assert r.returncode == 4
    assert "HostNotReady" in r.stderr
    assert json.loads(r.stdout)["code"] == "VIF_RULES_HOST_NOT_READY"
    assert cli(pool, "apply", pool.uuid(pool.halted)).returncode == 17
    assert cli(pool, "status", "--host", "host9").returncode == 16
    pool.set_state("host3", api_version="2.1")
    assert cli(pool, "status", "--host", "host3").returncode == 15
    r = cli(pool, "status", "--host", "host1", password="wrong")
    assert r.returncode == 11 and "SESSION_AUTHENTICATION_FAILED" in r.stderr
    r = cli(pool, "status", "--host", "host1", password=None)   # no password at all
    assert r.returncode == 2 and "password" in r.stderr
    assert cli(pool, "sync").returncode == 2
    assert cli(pool, "apply", "x", "--network", "nonsense").returncode == 2
    assert cli(pool, "frobnicate").returncode == 2
    assert not any(PASSWORD in c["argv"][-1] for c in pool.xs.plugin_calls)


def test_cli_audit(pool):
    pool.set_state("host3", fail={"status": ["VIF_RULES_HOST_NOT_READY", "ebtables", "install"]})
    r = cli(pool, "audit", "--workers", "3")
    assert r.returncode == vrc_errors.EXIT_AUDIT_PROBLEMS, r.stderr
    progress = [l for l in r.stderr.splitlines() if l.startswith("[")]
    assert sorted(l[:5] for l in progress) == ["[1/3]", "[2/3]", "[3/3]"]
    assert any(l.endswith("host3: ERROR VIF_RULES_HOST_NOT_READY (what=ebtables, how=install)"
                          " in status") for l in progress)
    assert "2 ok, 0 not protected, 1 errors" in r.stdout
    r = cli(pool, "audit", "--status-only", "--json", "--quiet", "--host", "host1",
            "--host", "host2")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    summary = json.loads(r.stdout)
    assert (summary["total"], summary["ok"], summary["synced"]) == (2, 2, False)


# ------------------------------------------------------------ packaging

NETWORK_TROUBLE = ("Could not find a version that satisfies", "No matching distribution",
                   "NewConnectionError", "Failed to establish a new connection",
                   "Temporary failure in name resolution", "Network is unreachable",
                   "ConnectTimeout", "ReadTimeout")


def _can_build_wheels_offline(python):
    """setuptools with a bdist_wheel command (>= 70.1, or the wheel package)."""
    probe = ("import setuptools\n"
             "try:\n    import wheel\nexcept ImportError:\n"
             "    from setuptools.command import bdist_wheel\n")
    return subprocess.run([python, "-c", probe], capture_output=True,
                          timeout=60).returncode == 0


def test_package_installs_with_pip_and_its_script_works(pool, tmp_path):
    """pip install of client/ into a fresh venv; its console script then
    talks to the stand-in. Offline when this Python can build wheels
    offline, else the ordinary online install (build tools and XenAPI from
    the package index); skipped only when that index cannot be reached."""
    src = tmp_path / "src"
    shutil.copytree(CLIENT, str(src), ignore=shutil.ignore_patterns(
        "__pycache__", "build", "*.egg-info"))       # keep the repo tree clean
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=180)
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    if _can_build_wheels_offline(sys.executable) and not os.environ.get("VIF_RULES_TEST_ONLINE"):
        wheels = tmp_path / "wheels"
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-index", "--no-deps",
                            "--no-build-isolation", "-w", str(wheels), str(src)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        built = [str(w) for w in wheels.glob("vif_rules_client-1.0.0-*.whl")]
        assert len(built) == 1
        r = subprocess.run(pip + ["install", "--no-index", "--no-deps"] + built,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        # the XenAPI dependency, offline: this venv's copy through a .pth
        deps = tmp_path / "deps"
        deps.mkdir()
        os.symlink(os.path.dirname(XenAPI.__file__), str(deps / "XenAPI"))
        site = subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, timeout=60).stdout.strip()
        with open(os.path.join(site, "xenapi-from-tests.pth"), "w") as f:
            f.write(str(deps) + "\n")
    else:
        r = subprocess.run(pip + ["install", "--timeout", "30", str(src)],
                           capture_output=True, text=True, timeout=480)
        if r.returncode != 0 and any(t in r.stdout + r.stderr for t in NETWORK_TROUBLE):
            pytest.skip("no package index to fetch the build tools from: %s"
                        % r.stderr.strip().splitlines()[-1:])
        assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(pip + ["show", "vif-rules-client"],
                       capture_output=True, text=True, timeout=60)
    assert "Requires: XenAPI" in r.stdout and "Version: 1.0.0" in r.stdout, r.stdout
    script = str(venv / "bin" / "vif-rules-client")
    r = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "1.0.0" in r.stdout, r.stderr
    r = cli(pool, "version", "host2", prog=script, env={"PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "host2: api 1.0, plugin 1.0.0-fake"
    # the installed copy, not the tree's
    r = subprocess.run([py, "-c", "import vif_rules_client; print(vif_rules_client.__file__)"],
                       capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert r.stdout.startswith(str(venv)), r.stdout + r.stderr
    assert not os.path.exists(os.path.join(CLIENT, "build"))
