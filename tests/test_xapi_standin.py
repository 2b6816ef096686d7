"""Tests of the XAPI stand-in itself, with the real PyPI XenAPI client.

The throwaway plugins import the stand-in XenAPIPlugin and run under
Python 2.7, 3.6 and the newest 3.x found under /root/.pyenv/versions.
"""

import glob
import os
import re
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
import tokenize
import xmlrpc.client

import pytest

XenAPI = pytest.importorskip("XenAPI")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from xapi_standin.server import XapiStandin  # noqa: E402

PYENV = "/root/.pyenv/versions"
PASSWORD = "s3cret-pw"


def _newest_py3():
    best = None
    for path in glob.glob(os.path.join(PYENV, "3.*", "bin", "python")):
        m = re.match(r"(\d+)\.(\d+)\.(\d+)$", path.split(os.sep)[-3])
        if m:
            key = tuple(int(x) for x in m.groups())
            if best is None or key > best[0]:
                best = (key, path)
    return best[1] if best else os.path.join(PYENV, "3.13.0", "bin", "python")


INTERPRETERS = {
    "py2.7": os.path.join(PYENV, "2.7.18", "bin", "python"),
    "py3.6": os.path.join(PYENV, "3.6.15", "bin", "python"),
    "py3-newest": _newest_py3(),
}


def _interp_params():
    out = []
    for name, path in INTERPRETERS.items():
        marks = []
        if not os.access(path, os.X_OK):
            marks.append(pytest.mark.skip(reason="interpreter %s missing" % path))
        out.append(pytest.param(path, id=name, marks=marks))
    return out


# Written for Python 2.4 .. 3.x, as a dom0 plugin must be.
PLUGIN_SRC = textwrap.dedent('''\
    import os
    import sys
    import XenAPIPlugin

    def echo(session, args):
        keys = sorted(args.keys())
        return ",".join(["%s=%s" % (k, args[k]) for k in keys])

    def version(session, args):
        return "%d.%d" % (sys.version_info[0], sys.version_info[1])

    def argv(session, args):
        return "%d %s" % (len(sys.argv), sys.argv[1][:60])

    def fail(session, args):
        raise XenAPIPlugin.Failure("TEST_PLUGIN_CODE", [args.get("p1", ""), "second"])

    def crash(session, args):
        raise KeyError("nope")

    def exit3(session, args):
        sys.stdout.write("partial")
        sys.stderr.write("dying on purpose")
        sys.exit(3)

    def garbage(session, args):
        sys.stdout.write("this is not xml")
        sys.stdout.flush()
        os._exit(0)

    def integer(session, args):
        return 5

    def sleep(session, args):
        import time
        time.sleep(60)
        return ""

    def domid(session, args):
        return session.xenapi.VM.get_domid(args["vm"])

    def bad_ref(session, args):
        try:
            session.xenapi.VM.get_domid("OpaqueRef:no-such-vm")
        except Exception:
            return ",".join(sys.exc_info()[1].details)
        return "no error"

    def session_kind(session, args):
        return "%s %s" % (session.__class__.__module__, session.__class__.__name__)

    def env(session, args):
        return ",".join([os.environ.get(k, "-") for k in sorted(args.keys())])

    XenAPIPlugin.dispatch({"echo": echo, "version": version, "argv": argv,
                           "fail": fail, "crash": crash, "exit3": exit3,
                           "garbage": garbage, "integer": integer,
                           "sleep": sleep, "domid": domid, "bad_ref": bad_ref,
                           "env": env, "session_kind": session_kind})
''')


def _write_plugin(directory, name, source=PLUGIN_SRC, mode=0o755, shebang=None):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        if shebang:
            f.write("#!" + shebang + "\n")
        f.write(source)
    os.chmod(path, mode)
    return path


@pytest.fixture
def plugin_dir(tmp_path):
    d = tmp_path / "plugins"
    d.mkdir()
    _write_plugin(str(d), "testplug")
    return str(d)


@pytest.fixture
def xs(plugin_dir):
    standin = XapiStandin(plugin_dir=plugin_dir, password=PASSWORD,
                          plugin_timeout=30)
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def pool(xs):
    """Two hosts; guests with the same domid on both."""
    h1 = xs.add_host("host1", python_for_plugins=INTERPRETERS["py3-newest"])
    h2 = xs.add_host("host2", python_for_plugins=INTERPRETERS["py3-newest"])
    net = xs.add_network("public", bridge="xenbr0")
    vm1 = xs.add_vm("guest1", resident_on=h1, domid=5,
                    xenstore_data={"vm-data/networking/404000000001": '{"label": "public"}'})
    vm2 = xs.add_vm("guest2", resident_on=h2, domid=5)
    vm3 = xs.add_vm("guest3", resident_on=h1, domid=6)
    halted = xs.add_vm("halted")
    vif1 = xs.add_vif(vm1, "0", "40:40:00:00:00:01", network=net)
    vif2 = xs.add_vif(vm2, "0", "40:40:00:00:00:02", network=net)
    return dict(h1=h1, h2=h2, net=net, vm1=vm1, vm2=vm2, vm3=vm3,
                halted=halted, vif1=vif1, vif2=vif2)


def _login(xs):
    s = XenAPI.Session(xs.url)
    s.xenapi.login_with_password("root", PASSWORD, "1.0", "test")
    return s


def _failure(fn, *args):
    with pytest.raises(XenAPI.Failure) as info:
        fn(*args)
    return info.value.details


# ------------------------------------------------------------------ sessions

def test_login_bad_password_and_user(xs):
    s = XenAPI.Session(xs.url)
    assert _failure(s.xenapi.login_with_password, "root", "wrong") == [
        "SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure"]
    assert _failure(s.xenapi.login_with_password, "admin", PASSWORD) == [
        "SESSION_AUTHENTICATION_FAILED", "admin", "Authentication failure"]
    s.xenapi.login_with_password("root", PASSWORD)
    assert s.handle.startswith("OpaqueRef:")


def test_invalid_session_raw_and_through_client(xs, pool):
    proxy = xmlrpc.client.ServerProxy(xs.url)
    assert proxy.VM.get_all("OpaqueRef:bogus") == {
        "Status": "Failure", "ErrorDescription": ["SESSION_INVALID", "OpaqueRef:bogus"]}
    s = _login(xs)
    ref = s.handle
    assert pool["vm1"] in s.xenapi.VM.get_all()
    s.xenapi.session.logout()
    # the ref is dead on the server ...
    assert proxy.VM.get_all(ref)["ErrorDescription"] == ["SESSION_INVALID", ref]
    # ... and the client, logged out, refuses to retry
    with pytest.raises(xmlrpc.client.Fault):
        s.xenapi.VM.get_all()


def test_unix_socket_with_the_packages_own_transport(xs, pool):
    assert "_" not in xs.socket_path
    assert stat.S_ISSOCK(os.stat(xs.socket_path).st_mode)
    s = XenAPI.Session(xs.local_url, transport=XenAPI.UDSTransport())
    # dom0-local callers are local root: no password needed, as on dom0
    s.xenapi.login_with_password("root", "")
    assert s.xenapi.VM.get_domid(pool["vm1"]) == "5"
    s.xenapi.session.logout()
    assert xs.calls[0][0] == "unix"


def test_unix_socket_password_checked_when_not_trusted(plugin_dir):
    with XapiStandin(plugin_dir=plugin_dir, password=PASSWORD,
                     trust_local_socket=False) as standin:
        s = XenAPI.Session(standin.local_url, transport=XenAPI.UDSTransport())
        assert _failure(s.xenapi.login_with_password, "root", "")[0] == \
            "SESSION_AUTHENTICATION_FAILED"
        s.xenapi.login_with_password("root", PASSWORD)


def test_slave_local_login(xs):
    s = XenAPI.Session(xs.url)
    s.slave_local_login_with_password("root", PASSWORD)
    ref = s.handle
    assert len(s.xenapi.pool.get_all()) == 0
    s.xenapi.session.logout()   # the client sends session.local_logout
    assert ("tcp", "session.local_logout", []) in xs.calls
    proxy = xmlrpc.client.ServerProxy(xs.url)
    assert proxy.pool.get_all(ref)["ErrorDescription"] == ["SESSION_INVALID", ref]


# ------------------------------------------------------------------- objects

def test_records_and_getters(xs, pool):
    s = _login(xs)
    x = s.xenapi
    hosts = x.host.get_all()
    assert sorted(hosts) == sorted([pool["h1"], pool["h2"]])
    poolref = x.pool.get_all()[0]
    assert x.pool.get_master(poolref) == pool["h1"]
    h1 = x.host.get_record(pool["h1"])
    assert h1["name_label"] == "host1"
    assert x.host.get_by_uuid(h1["uuid"]) == pool["h1"]
    assert x.host.get_uuid(pool["h1"]) == h1["uuid"]
    assert x.host.get_name_label(pool["h2"]) == "host2"
    assert x.host.get_address(pool["h1"]) == h1["address"]
    assert set(x.host.get_all_records()) == set(hosts)
    assert pool["vm1"] in h1["resident_VMs"] and pool["vm2"] not in h1["resident_VMs"]

    vm = x.VM.get_record(pool["vm1"])
    assert vm["domid"] == "5" and isinstance(vm["domid"], str)
    assert vm["power_state"] == "Running" and vm["resident_on"] == pool["h1"]
    assert vm["is_control_domain"] is False
    assert vm["VIFs"] == [pool["vif1"]] == x.VM.get_VIFs(pool["vm1"])
    assert x.VM.get_xenstore_data(pool["vm1"]) == {
        "vm-data/networking/404000000001": '{"label": "public"}'}
    assert x.VM.get_domid(pool["vm3"]) == "6"
    assert x.VM.get_resident_on(pool["vm2"]) == pool["h2"]
    assert x.VM.get_power_state(pool["halted"]) == "Halted"
    assert x.VM.get_domid(pool["halted"]) == "-1"
    assert x.VM.get_resident_on(pool["halted"]) == "OpaqueRef:NULL"
    assert x.VM.get_by_uuid(vm["uuid"]) == pool["vm1"]
    assert x.VM.get_uuid(pool["vm1"]) == vm["uuid"]
    assert x.VM.get_name_label(pool["vm1"]) == "guest1"
    dom0s = [r for r, v in x.VM.get_all_records().items() if v["is_control_domain"]]
    assert len(dom0s) == 2
    assert all(x.VM.get_domid(r) == "0" for r in dom0s)
    assert x.VM.get_is_control_domain(dom0s[0]) is True

    vif = x.VIF.get_record(pool["vif1"])
    assert (vif["device"], vif["MAC"], vif["VM"], vif["network"]) == (
        "0", "40:40:00:00:00:01", pool["vm1"], pool["net"])
    assert x.VIF.get_device(pool["vif2"]) == "0"
    assert x.VIF.get_MAC(pool["vif2"]) == "40:40:00:00:00:02"
    assert x.VIF.get_VM(pool["vif2"]) == pool["vm2"]
    assert x.VIF.get_network(pool["vif2"]) == pool["net"]
    assert set(x.VIF.get_all_records()) == {pool["vif1"], pool["vif2"]}
    assert x.network.get_bridge(pool["net"]) == "xenbr0"


def test_error_codes_of_the_object_calls(xs, pool):
    x = _login(xs).xenapi
    assert _failure(x.VM.get_domid, "OpaqueRef:nope") == [
        "HANDLE_INVALID", "VM", "OpaqueRef:nope"]
    assert _failure(x.VIF.get_record, pool["vm1"]) == [
        "HANDLE_INVALID", "VIF", pool["vm1"]]
    assert _failure(x.VM.get_by_uuid, "0000") == ["UUID_INVALID", "VM", "0000"]
    assert _failure(x.VM.frobnicate, pool["vm1"]) == [
        "MESSAGE_METHOD_UNKNOWN", "VM.frobnicate"]
    assert _failure(x.Bogus.get_all) == ["MESSAGE_METHOD_UNKNOWN", "Bogus.get_all"]
    assert _failure(x.VM.get_domid) == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.get_domid", "2", "1"]


def test_model_changes_are_visible(xs, pool):
    x = _login(xs).xenapi
    xs.set_domid(pool["vm1"], 9)
    assert x.VM.get_domid(pool["vm1"]) == "9"
    xs.remove_vm(pool["vm1"])
    assert _failure(x.VM.get_record, pool["vm1"])[0] == "HANDLE_INVALID"
    assert _failure(x.VIF.get_record, pool["vif1"])[0] == "HANDLE_INVALID"
    xs.halt_vm(pool["vm2"])
    assert x.VM.get_power_state(pool["vm2"]) == "Halted"
    xs.start_vm(pool["vm2"], pool["h1"], domid=12)
    assert (x.VM.get_resident_on(pool["vm2"]), x.VM.get_domid(pool["vm2"])) == (
        pool["h1"], "12")


def test_get_all_records_where(xs, pool):
    x = _login(xs).xenapi
    both = x.VM.get_all_records_where('field "domid" = "5"')
    assert set(both) == {pool["vm1"], pool["vm2"]}
    one = x.VM.get_all_records_where(
        'field "domid" = "5" and field "resident_on" = "%s"' % pool["h2"])
    assert list(one) == [pool["vm2"]]
    assert one[pool["vm2"]]["name_label"] == "guest2"
    assert x.VM.get_all_records_where(
        'field "domid" = "7" and field "resident_on" = "%s"' % pool["h1"]) == {}
    either = x.VM.get_all_records_where(
        '(field "domid" = "6" or field "name_label" = "halted") and '
        'not (field "is_control_domain" = "true")')
    assert set(either) == {pool["vm3"], pool["halted"]}
    assert set(x.VIF.get_all_records_where(
        'field "VM" = "%s"' % pool["vm2"])) == {pool["vif2"]}
    assert _failure(x.VM.get_all_records_where, 'field "domid" == "5"')[0] == \
        "INVALID_VALUE"
    assert _failure(x.VM.get_all_records_where, 'field "nosuch" = "5"')[0] == \
        "INVALID_VALUE"


# ------------------------------------------------------------- call_plugin

@pytest.mark.parametrize("python", _interp_params())
def test_plugin_success_runs_under_that_interpreter(xs, pool, python):
    xs.set_host_plugin_config(pool["h1"], python_for_plugins=python)
    x = _login(xs).xenapi
    want = subprocess.run([python, "-c", "import sys; sys.stdout.write("
                           "'%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, timeout=30).stdout
    assert x.host.call_plugin(pool["h1"], "testplug", "version", {}) == want
    assert x.host.call_plugin(pool["h1"], "testplug", "echo",
                              {"b": "2", "a": "x y<&>"}) == "a=x y<&>,b=2"
    # one argv element holding the XML-RPC methodCall
    assert x.host.call_plugin(pool["h1"], "testplug", "argv", {}).startswith(
        "2 <methodCall>\n<methodName>argv</methodName>")
    call = xs.plugin_calls[-1]
    assert call["argv"][0] == python and call["host"] == pool["h1"]


@pytest.mark.parametrize("python", _interp_params())
def test_plugin_failures_reach_the_caller(xs, pool, python):
    xs.set_host_plugin_config(pool["h1"], python_for_plugins=python)
    x = _login(xs).xenapi
    h = pool["h1"]
    assert _failure(x.host.call_plugin, h, "testplug", "fail", {"p1": "first"}) == [
        "TEST_PLUGIN_CODE", "first", "second"]
    assert _failure(x.host.call_plugin, h, "testplug", "crash", {}) == [
        "XENAPI_PLUGIN_FAILURE", "crash", "KeyError", "'nope'"]
    assert _failure(x.host.call_plugin, h, "testplug", "no_such_fn", {}) == [
        "UNKNOWN_XENAPI_PLUGIN_FUNCTION", "no_such_fn"]
    details = _failure(x.host.call_plugin, h, "testplug", "exit3", {})
    assert details[:3] == ["XENAPI_PLUGIN_FAILURE", "non-zero exit", "partial"]
    assert "dying on purpose" in details[3]
    details = _failure(x.host.call_plugin, h, "testplug", "garbage", {})
    assert details[:3] == ["XENAPI_PLUGIN_FAILURE", "failed to parse plugin output",
                           "this is not xml"]
    assert _failure(x.host.call_plugin, h, "testplug", "integer", {})[:2] == [
        "XENAPI_PLUGIN_FAILURE", "unexpected XMLRPC result"]


@pytest.mark.parametrize("python", _interp_params())
def test_plugin_calls_back_over_the_unix_socket(xs, pool, python):
    xs.set_host_plugin_config(pool["h1"], python_for_plugins=python)
    s = _login(xs)
    x = s.xenapi
    assert x.host.call_plugin(pool["h1"], "testplug", "domid",
                              {"vm": pool["vm3"]}) == "6"
    xs.set_domid(pool["vm3"], 42)
    assert x.host.call_plugin(pool["h1"], "testplug", "domid",
                              {"vm": pool["vm3"]}) == "42"
    assert x.host.call_plugin(pool["h1"], "testplug", "bad_ref", {}) == \
        "HANDLE_INVALID,VM,OpaqueRef:no-such-vm"
    # the plugin used the caller's session, over the unix socket
    back = [c for c in xs.calls if c[0] == "unix"]
    assert ("unix", "VM.get_domid", [pool["vm3"]]) in back
    assert xs.plugin_calls[-1]["session"] == s.handle


def test_plugin_session_is_a_real_xenapi_session_when_xenapi_importable(xs, pool):
    """With the XenAPI package on the plugin's path (as on dom0), the
    session handed to the function is a XenAPI.Session on the unix socket."""
    py = INTERPRETERS["py3-newest"]
    if not os.access(py, os.X_OK):
        pytest.skip("interpreter %s missing" % py)
    if subprocess.run([py, "-c", "import XenAPI"], capture_output=True,
                      timeout=30).returncode == 0:
        pytest.skip("%s has XenAPI installed: cannot test both paths" % py)
    site = os.path.dirname(os.path.dirname(os.path.abspath(XenAPI.__file__)))
    xs.set_host_plugin_config(pool["h1"], python_for_plugins=py,
                              plugin_env={"PYTHONPATH": site})
    x = _login(xs).xenapi
    assert x.host.call_plugin(pool["h1"], "testplug", "session_kind", {}) == \
        "XenAPI.XenAPI Session"
    assert x.host.call_plugin(pool["h1"], "testplug", "domid", {"vm": pool["vm1"]}) == "5"
    assert x.host.call_plugin(pool["h1"], "testplug", "bad_ref", {}) == \
        "HANDLE_INVALID,VM,OpaqueRef:no-such-vm"
    # without it, the stand-in's own fallback session
    xs.set_host_plugin_config(pool["h1"], plugin_env={})
    assert x.host.call_plugin(pool["h1"], "testplug", "session_kind", {}) == \
        "XenAPIPlugin LocalSession"


def test_missing_plugin_and_names_with_a_slash(xs, pool, plugin_dir):
    x = _login(xs).xenapi
    h = pool["h1"]
    assert _failure(x.host.call_plugin, h, "nosuch", "echo", {}) == [
        "XENAPI_MISSING_PLUGIN", "nosuch"]
    sub = os.path.join(plugin_dir, "sub")
    os.mkdir(sub)
    _write_plugin(sub, "inner")
    for name in ("sub/inner", "../plugins/testplug", os.path.join(plugin_dir, "testplug")):
        assert _failure(x.host.call_plugin, h, name, "echo", {}) == [
            "XENAPI_MISSING_PLUGIN", name]
    _write_plugin(plugin_dir, "noexec", mode=0o644)
    details = _failure(x.host.call_plugin, h, "noexec", "echo", {})
    assert details[:2] == ["XENAPI_PLUGIN_FAILURE", "non-zero exit"]
    assert all(c["plugin"] != "nosuch" for c in xs.plugin_calls)


def test_args_must_be_a_string_map(xs, pool):
    x = _login(xs).xenapi
    for bad in ({"a": 1}, ["a"], "a=b"):
        assert _failure(x.host.call_plugin, pool["h1"], "testplug", "echo", bad) == [
            "FIELD_TYPE_ERROR", "args"]
    assert _failure(x.host.call_plugin, "OpaqueRef:nohost", "testplug", "echo", {}) == [
        "HANDLE_INVALID", "host", "OpaqueRef:nohost"]
    assert _failure(x.host.call_plugin, pool["h1"], "testplug", "echo") == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH", "host.call_plugin", "5", "4"]
    assert xs.plugin_calls == []


def test_plugin_executed_directly_through_its_shebang(xs, plugin_dir):
    py = INTERPRETERS["py3-newest"]
    if not os.access(py, os.X_OK):
        pytest.skip("interpreter %s missing" % py)
    _write_plugin(plugin_dir, "shebang", shebang=py)
    h = xs.add_host("plain")  # no python_for_plugins: the file is exec'd
    x = _login(xs).xenapi
    assert x.host.call_plugin(h, "shebang", "echo", {"k": "v"}) == "k=v"
    assert xs.plugin_calls[-1]["argv"][0] == os.path.join(plugin_dir, "shebang")


def test_calls_are_recorded_per_host_with_per_host_env(xs, pool, tmp_path):
    xs.plugin_env["GLOBAL_ONE"] = "g"
    xs.set_host_plugin_config(pool["h1"], plugin_env={"VIF_RULES_CONF": "/conf/h1"})
    xs.set_host_plugin_config(pool["h2"], plugin_env={"VIF_RULES_CONF": "/conf/h2",
                                                      "GLOBAL_ONE": "over"})
    x = _login(xs).xenapi
    keys = {"VIF_RULES_CONF": "", "GLOBAL_ONE": "", "XAPI_STANDIN_HOST_UUID": ""}
    r1 = x.host.call_plugin(pool["h1"], "testplug", "env", keys)
    r2 = x.host.call_plugin(pool["h2"], "testplug", "env", keys)
    u1, u2 = x.host.get_uuid(pool["h1"]), x.host.get_uuid(pool["h2"])
    assert r1 == "g,/conf/h1,%s" % u1
    assert r2 == "over,/conf/h2,%s" % u2
    assert [c["host"] for c in xs.plugin_calls[:2]] == [pool["h1"], pool["h2"]]
    # a near-empty environment as under XAPI: never the test runner's venv
    assert x.host.call_plugin(pool["h1"], "testplug", "env",
                              {"PATH": "", "VIRTUAL_ENV": ""}) == \
        "/usr/local/bin:/opt/xensource/bin:/usr/bin:/bin:/sbin:/usr/sbin,-"
    inv = xs.plugin_calls[1]["env"]["XAPI_STANDIN_INVENTORY"]
    assert "INSTALLATION_UUID='%s'" % u2 in open(inv).read()


def test_plugin_timeout_kills_it(plugin_dir):
    with XapiStandin(plugin_dir=plugin_dir, password=PASSWORD,
                     plugin_timeout=1) as standin:
        h = standin.add_host("h", python_for_plugins=sys.executable)
        x = _login(standin).xenapi
        start = time.monotonic()
        details = _failure(x.host.call_plugin, h, "testplug", "sleep", {})
        assert details[:2] == ["XENAPI_PLUGIN_FAILURE", "signal: SIGKILL"]
        assert time.monotonic() - start < 20


def test_stop_leaves_nothing_behind(plugin_dir):
    before = set(threading.enumerate())
    standin = XapiStandin(plugin_dir=plugin_dir, password=PASSWORD).start()
    port, path, workdir = standin.port, standin.socket_path, standin.workdir
    h = standin.add_host("h", python_for_plugins=sys.executable)
    _login(standin).xenapi.host.call_plugin(h, "testplug", "echo", {})
    standin.stop()
    assert not os.path.exists(path) and not os.path.exists(workdir)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert left == []


def test_refuses_a_socket_in_use(xs, plugin_dir):
    other = XapiStandin(plugin_dir=plugin_dir, socket_path=xs.socket_path)
    with pytest.raises(RuntimeError):
        other.start()
    # the running stand-in is untouched
    s = XenAPI.Session(xs.local_url, transport=XenAPI.UDSTransport())
    s.xenapi.login_with_password("root", "")


def test_command_line(tmp_path, plugin_dir):
    fixture = tmp_path / "pool.json"
    fixture.write_text('{"hosts": [{"name_label": "cli-host"}],'
                       ' "networks": [{"name_label": "net0"}],'
                       ' "vms": [{"name_label": "vm-a", "host": "cli-host", "domid": 3,'
                       ' "vifs": [{"device": "0", "MAC": "40:40:00:00:00:0a",'
                       ' "network": "net0"}]}]}')
    sock = "/tmp/xapistandin-cli-%d" % os.getpid()
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "xapi_standin", "server.py"),
         "--port", "0", "--socket", sock, "--plugins", plugin_dir,
         "--password", PASSWORD, "--fixture", str(fixture)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+) and unix socket (\S+)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        assert m.group(2) == sock
        s = XenAPI.Session(m.group(1))
        s.xenapi.login_with_password("root", PASSWORD)
        vm = s.xenapi.VM.get_all_records_where('field "domid" = "3"')
        assert [v["name_label"] for v in vm.values()] == ["vm-a"]
        vif = s.xenapi.VM.get_VIFs(list(vm)[0])[0]
        assert s.xenapi.VIF.get_MAC(vif) == "40:40:00:00:00:0a"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0
    assert not os.path.exists(sock)


def test_xenapiplugin_stays_python24_compatible():
    """The stand-in XenAPIPlugin must load where dom0's does (Python 2.4+)."""
    path = os.path.join(HERE, "xapi_standin", "XenAPIPlugin.py")
    forbidden = [(r"^\s*with\s", "with statement"),
                 (r"except\s+[\w.(), ]+\s+as\s", "except ... as"),
                 (r"\.format\(", "str.format"),
                 (r"^\s*print[\s(]", "print"),
                 (r"^\s*@", "decorator"),
                 (r"\bany\(|\ball\(", "any()/all()"),
                 (r"\bif\b[^:\n]*\belse\b", "conditional expression")]
    lines = {}
    with open(path) as f:
        for tok in tokenize.generate_tokens(f.readline):
            if tok.type == tokenize.COMMENT:
                continue
            text = tok.string
            if tok.type == tokenize.STRING:
                assert not re.match(r"[bB]", text), "bytes literal %s" % text
                text = '""'
            lines.setdefault(tok.start[0], []).append(text)
    code_lines = [" ".join(v) for k, v in sorted(lines.items())]
    for pattern, what in forbidden:
        hits = [l for l in code_lines if re.search(pattern, l)]
        assert hits == [], "%s in XenAPIPlugin.py: %r" % (what, hits)
    for name, py in INTERPRETERS.items():
        if os.access(py, os.X_OK):
            r = subprocess.run([py, "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
                                " import XenAPIPlugin", os.path.dirname(path)],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, (name, r.stderr)


def test_concurrent_plugin_calls_with_callbacks(xs, pool):
    """A pool-wide audit calls every host in parallel; each plugin calls
    back over the unix socket while the others still run."""
    results, errors = {}, []

    def worker(i):
        try:
            x = _login(xs).xenapi
            host = pool["h1"] if i % 2 else pool["h2"]
            vm = pool["vm3"] if i % 2 else pool["vm2"]
            results[i] = x.host.call_plugin(host, "testplug", "domid", {"vm": vm})
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert results == dict((i, "6" if i % 2 else "5") for i in range(8))
    assert sorted(c["host"] for c in xs.plugin_calls) == sorted(
        [pool["h1"]] * 4 + [pool["h2"]] * 4)
