"""What a hook that hands its change over loads: no os, no command runner,
no engine (in a boot storm most hooks are such waiters, and each module is
CPU every one of them pays), and no garbage collector runs in it."""

import fcntl
import json
import os
import subprocess
import sys
import time

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOOK = os.path.join(TOP, "xapi-plugin", "vif_rules.py")
PYTHONS = {
    "2.7": "/root/.pyenv/versions/2.7.18/bin/python",
    "3.6": "/root/.pyenv/versions/3.6.15/bin/python",
    "this": sys.executable,
}
# Loaded only by the caller that commits (or by other entry points).
NOT_ON_THE_WAITING_PATH = ["os", "subprocess", "re", "select", "enum", "vifrules.runner",
                           "vifrules.engine", "vifrules.ruleset", "vifrules.policy",
                           "vifrules.state", "vifrules.ovs", "vifrules.xapi"]

# The hook file as it runs, but hook_main's modules reported at the end.
DRIVER = """
import sys
path = sys.argv[1]
namespace = {"__file__": path, "__name__": "vif_rules_under_test"}
exec(compile(open(path).read(), path, "exec"), namespace)
import gc
if len(sys.argv) > 2 and sys.argv[2] == "--no-ticks":
    # Only the holder's wake-up may end the wait (and the deadline).
    del sys.argv[2]
    import vifrules.lock
    vifrules.lock.WAIT_TICK = 3600
status = namespace["hook_main"](sys.argv[2:])
sys.stdout.write("\\nMODULES " + " ".join(sorted(sys.modules)) + "\\n")
sys.stdout.write("GC %s\\n" % gc.isenabled())
sys.exit(status)
"""

NETWORK = json.dumps({"label": "public", "mac": "02:00:00:00:00:05",
                      "ips": [{"ip": "192.0.2.5", "netmask": "255.255.255.0", "enabled": "1"}],
                      "ip6s": []})


def _host(tmp_path, lock_timeout):
    """(state directory, environment) of a host whose configuration names
    tools that do not exist: even if the lock were free, no firewall is
    touched."""
    conf = tmp_path / "conf"
    conf.write_text("".join('%s="/nonexistent/%s"\n' % (key, key.lower()) for key in
                            ("IPTABLES", "IP6TABLES", "EBTABLES", "ARPTABLES")) +
                    'STATE_DIR="%s"\nLOCK_FILE="%s"\nLOCK_TIMEOUT="%d"\nBACKEND="bridge"\n'
                    % (tmp_path / "state", tmp_path / "lock", lock_timeout))
    env = dict(os.environ, VIF_RULES_CONF=str(conf))
    env.pop("PYTHONPATH", None)
    return tmp_path / "state", env


@pytest.mark.parametrize("version", sorted(PYTHONS))
def test_a_waiting_hook_loads_no_os_and_no_engine(tmp_path, version):
    python = PYTHONS[version]
    if not os.path.exists(python):
        pytest.skip("no Python %s at %s" % (version, python))
    state, env = _host(tmp_path, lock_timeout=20)
    with open(tmp_path / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a commit runs: the hook must hand over
        hook = subprocess.Popen([python, "-S", "-c", DRIVER, HOOK, "online", "vif5.0",
                                 "--network", NETWORK], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            queue = state / "queue"
            deadline = time.time() + 15
            while not (queue.is_dir() and [n for n in os.listdir(queue)
                                           if not n.endswith(".tmp")]):
                assert hook.poll() is None, hook.communicate()
                assert time.time() < deadline, "the hook queued nothing"
                time.sleep(0.01)
            ticket = [n for n in os.listdir(queue) if not n.endswith(".tmp")][0]
            change = json.loads((queue / ticket).read_text())
            assert change["kind"] == "apply" and change["vif"] == "vif5.0"
            # What a holder does for it: the result, then the entry gone.
            (state / "results").mkdir(exist_ok=True)
            (state / "results" / ticket).write_text(
                json.dumps({"result": {"vif": "vif5.0", "replaced": False}}))
            (queue / ticket).unlink()
            out, err = hook.communicate(timeout=15)
        finally:
            if hook.poll() is None:
                hook.kill()
                hook.wait()
    assert hook.returncode == 0, err
    assert json.loads(out.split("\nMODULES ")[0]) == {"vif": "vif5.0", "replaced": False}
    modules = out.split("\nMODULES ")[1].split("\n")[0].split()
    assert "vifrules.handover" in modules and "vifrules.lock" in modules  # it did wait
    loaded = [name for name in NOT_ON_THE_WAITING_PATH if name in modules]
    assert loaded == [], "a waiting hook loaded %s" % loaded
    assert "GC False" in out


@pytest.mark.parametrize("version", sorted(PYTHONS))
def test_a_committing_hook_loads_no_os(tmp_path, version):
    """The caller that finds the lock free commits (engine, records, runner):
    in a storm a few dozen do, and os would cost each of them 4-6 ms. The
    tools do not exist, so the commit fails after its commands ran."""
    python = PYTHONS[version]
    if not os.path.exists(python):
        pytest.skip("no Python %s at %s" % (version, python))
    state, env = _host(tmp_path, lock_timeout=20)
    hook = subprocess.run([python, "-S", "-c", DRIVER, HOOK, "online", "vif5.0",
                           "--network", NETWORK], env=env, capture_output=True, text=True,
                          timeout=60)
    assert "VIF_RULES_COMMAND_FAILED" in hook.stderr, hook.stderr
    modules = hook.stdout.split("MODULES ")[1].split("\n")[0].split()
    assert "vifrules.engine" in modules and "vifrules.runner" in modules  # it committed
    assert [name for name in ("os", "subprocess", "posixpath") if name in modules] == []


def test_fs_paths_as_os_path_has_them(tmp_path, monkeypatch):
    sys.path.insert(0, os.path.join(TOP, "xapi-plugin"))
    from vifrules import fs
    for parts in [("a",), ("a", "b"), ("/a/", "b"), ("a", "/b", "c"), ("", "b"), ("a/", ""),
                  ("/", "x"), ("/var/run/vif-rules", "queue", "123-4-1")]:
        assert fs.join(*parts) == os.path.join(*parts), parts
    for path in ["a", "/a", "/a/b", "a/b/", "/", "//a", "a//b", "", "/var/lock/vif-rules.lock"]:
        assert fs.dirname(path) == os.path.dirname(path), path
    deep = tmp_path / "x" / "y" / "z"
    fs.makedirs(str(deep))
    fs.makedirs(str(deep))  # there already: content
    assert fs.isdir(str(deep)) and not fs.isdir(str(tmp_path / "nothing"))
    (deep / "f").write_text("")
    assert fs.exists(str(deep / "f")) and not fs.isdir(str(deep / "f"))
    assert not fs.exists("bad\0path")
    assert fs.isfile(str(deep / "f")) and not fs.isfile(str(deep)) and not fs.isfile("bad\0path")
    monkeypatch.setenv("VIF_RULES_FS_TEST", "/etc/caf\u00e9")
    assert fs.getenv("VIF_RULES_FS_TEST") == "/etc/caf\u00e9"
    assert fs.getenv("VIF_RULES_FS_TEST_UNSET") is None
    assert fs.environ() == dict(os.environ)  # what the runner gives its commands


class _Engine(object):
    """What handover asks of an engine: the group's outcomes."""

    def __init__(self, lock_timeout):
        self.config = type("Config", (), {"lock_timeout": lock_timeout})()
        self.groups = []

    def commit_changes(self, changes):
        self.groups.append([c.vif.name for c in changes])
        return [{"result": {"vif": c.vif.name, "replaced": False}} for c in changes]


def test_the_holder_wakes_each_waiter_it_committed_for(tmp_path):
    """Waiters that never look on their own (no ticks) end when the holder
    has committed their changes, long before their deadline."""
    sys.path.insert(0, os.path.join(TOP, "xapi-plugin"))
    from vifrules import handover
    state, env = _host(tmp_path, lock_timeout=60)
    pythons = [p for p in PYTHONS.values() if os.path.exists(p)]
    with open(tmp_path / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        hooks = [subprocess.Popen([python, "-S", "-c", DRIVER, HOOK, "--no-ticks", "online",
                                   "vif%d.0" % (5 + n), "--network", NETWORK], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for n, python in enumerate(pythons)]
        try:
            queue = state / "queue"
            deadline = time.time() + 15
            while len([n for n in (os.listdir(queue) if queue.is_dir() else [])
                       if not n.endswith(".tmp")]) < len(hooks):
                assert time.time() < deadline, "not every hook queued"
                time.sleep(0.01)
            time.sleep(0.2)  # inside flock by now, not before it
            engine = _Engine(60)
            started = time.time()
            handover._commit_queued(engine, handover._Queue(str(state)), None)
            outputs = [hook.communicate(timeout=30) for hook in hooks]
            waited = time.time() - started
        finally:
            for hook in hooks:
                if hook.poll() is None:
                    hook.kill()
                    hook.wait()
    # One group, in arrival order (which of the hooks queued first is theirs to race).
    assert [sorted(group) for group in engine.groups] == [
        ["vif%d.0" % (5 + n) for n in range(len(hooks))]]
    for hook, (out, err) in zip(hooks, outputs):
        assert hook.returncode == 0, err
        assert '"replaced": false' in out
    # Their deadline was 60 s away and they never ticked: the wake-up ended it.
    assert waited < 30
