"""The vif script patches: every generation's fixture (tests/fixtures/vif/),
patched by patches/vif-patch, is run for every event and type with stand-in
commands that record their calls; the hook is called with the right action
and device, and every call the unpatched script made is still made, in order.
Then vif-patch's states: apply once, revert to the exact bytes, refuse the
unknown, notice what changed since."""

import hashlib
import io
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "xapi-plugin"))
sys.path.insert(0, os.path.join(TOP, "patches"))

from vifrules import vifpatch  # noqa: E402
import make_patches  # noqa: E402

FIXTURES = os.path.join(TOP, "tests", "fixtures", "vif")
VIF_PATCH = os.path.join(TOP, "patches", "vif-patch")
PYTHONS = {
    "2.7": "/root/.pyenv/versions/2.7.18/bin/python",
    "3.6": "/root/.pyenv/versions/3.6.15/bin/python",
    "this": sys.executable,
}
XAPI_SCRIPT = "/etc/xensource/scripts/vif"
VIF_REAL = "/usr/libexec/xenopsd/vif-real"
DOMID, DEVID = "5", "0"
VM_UUID = "b5a0c3e8-7f3e-4c31-9d2e-0a1b2c3d4e5f"

# Generation -> what its script handles: the types udev runs it for, whether
# it has a move arm, its network modes, how it is called.
GENERATIONS = {
    "A": dict(types=("vif",), move=False, modes=("bridge",), call="action"),
    "B": dict(types=("vif", "tap"), move=False, modes=("bridge", "vswitch"), call="action-type"),
    "C": dict(types=("vif", "tap"), move=False, modes=("bridge", "openvswitch"), call="action-type"),
    "C2": dict(types=("vif", "tap"), move=True, modes=("bridge", "openvswitch"), call="action-type"),
    "D": dict(types=("vif", "tap"), move=True, modes=("bridge", "openvswitch"), call="action-type"),
    "E": dict(types=("vif", "tap"), move=True, modes=("bridge", "openvswitch"), call="action-type"),
    "F-6.5": dict(types=("vif", "tap"), move=True, modes=("bridge", "openvswitch"), call="stub"),
    "F-7.1": dict(types=("vif", "tap"), move=True, modes=("bridge", "openvswitch"), call="stub"),
    "F-7.6": dict(types=("vif", "tap"), move=True, modes=("bridge", "openvswitch"), call="stub"),
    "F-trunks": dict(types=("vif", "tap"), move=True, modes=("bridge", "openvswitch"), call="stub"),
}
EVENTS = ("online", "add", "remove", "move")

# Absolute paths in the scripts that the sandbox stands in for; each is
# prefixed with the sandbox root, in the unpatched and the patched script alike.
SANDBOXED = ("/usr/sbin/brctl", "/sbin/brctl", "/sbin/ip", "/sbin/ethtool", "/usr/bin/ovs-vsctl",
             "/usr/bin/ovs-cfg-mod", "/sbin/service", "/opt/xensource/libexec/setup-vif-rules",
             "/etc/xapi.d/vif-hotplug", "/etc/xensource/network.conf", "/sys/", VIF_REAL)
COMMANDS_AT = ("/usr/sbin/brctl", "/sbin/ip", "/sbin/ethtool", "/usr/bin/ovs-vsctl",
               "/usr/bin/ovs-cfg-mod", "/sbin/service", "/opt/xensource/libexec/setup-vif-rules",
               "/usr/libexec/xenopsd/setup-vif-rules", "/etc/xapi.d/vif-hotplug")
COMMANDS_ON_PATH = ("xenstore-read", "xenstore-write", "xenstore-rm", "xenstore-exists", "logger")

# One stand-in for every command: records "name args" (shell-quoted) and
# keeps xenstore as files under $VIFTEST_STORE.
STANDIN = r'''#!/bin/bash
# xenstore is one file of "key<TAB>value" lines, "-key" removes key and below;
# the last line about a key wins. Only shell builtins: a call costs one bash.
name=${0##*/}
record() { local line; printf -v line '%q ' "$name" "$@"; printf '%s\n' "${line% }" >> "$VIFTEST_CALLS"; }
key() { case $1 in /*) k=$1 ;; *) k=/local/domain/0/$1 ;; esac; }
lookup() {
    found=1
    local line
    while IFS= read -r line; do
        case $line in
            "$k"$'\t'*) found=0; value=${line#*$'\t'} ;;
            "-$k") found=1 ;;
            "-$k"/*) ;;
            -*) [[ $k == "${line#-}"/* ]] && found=1 ;;
        esac
    done < "$VIFTEST_STORE"
}
case $name in
xenstore-read)
    record "$@"; key "$1"; lookup
    if [ $found -ne 0 ]; then echo "couldn't read path $1" >&2; exit 1; fi
    printf '%s\n' "$value"; exit 0 ;;
xenstore-exists) record "$@"; key "$1"; lookup; exit $found ;;
xenstore-write)
    record "$@"
    if [ "$1" = "$VIFTEST_FAIL_WRITE" ]; then exit 1; fi
    key "$1"; printf '%s\t%s\n' "$k" "$2" >> "$VIFTEST_STORE"; exit 0 ;;
xenstore-rm) record "$@"; key "$1"; printf -- '-%s\n' "$k" >> "$VIFTEST_STORE"; exit 0 ;;
logger)
    if [ $# -eq 2 ] && [ "$1" = -t ]; then
        while IFS= read -r line; do record "$1" "$2" "$line"; done
    else
        record "$@"
    fi
    exit 0 ;;
vif_rules.py)
    record "$@"
    if [ -n "$VIFTEST_HOOK_FAIL" ]; then echo "vif_rules: error: stand-in failure for $2" >&2; exit 5; fi
    echo "stand-in hook: its stdout is not logged"; exit 0 ;;
setup-vif-rules)
    record "$@"
    if [ -n "$VIFTEST_FAIL_SETUP" ] && [ "${@: -1}" = "$VIFTEST_FAIL_SETUP" ]; then exit 1; fi
    exit 0 ;;
ovs-vsctl)
    record "$@"
    case "$*" in *br-to-vlan*) echo 0 ;; *br-to-parent*) echo "${@: -1}" ;; *ofport*) echo 3 ;; esac
    exit 0 ;;
*) record "$@"; exit 0 ;;
esac
'''


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def _write(path, data, mode=0o755):
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory)
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def fixture_bytes(generation):
    return _read(os.path.join(FIXTURES, make_patches.SOURCES[generation][0]))


def script_path(generation):
    if generation.startswith("F-"):
        return VIF_REAL
    return XAPI_SCRIPT


class Host(object):
    """A sandbox dom0 root: the vif script at its real path, stand-in
    commands, a xenstore, sysfs files and the stand-in hook."""

    def __init__(self, generation):
        # mkdtemp: a path of plain characters, as vif-patch wants for --hook
        self.root = tempfile.mkdtemp(prefix="vifpatch-")
        self.generation = generation
        self.hook = self.root + "/hook/vif_rules.py"
        self.script = self.root + script_path(generation)
        standin = self.root + "/bin/standin"
        _write(standin, STANDIN.encode())
        for name in COMMANDS_ON_PATH:
            os.symlink(standin, self.root + "/bin/" + name)
        for path in COMMANDS_AT + ("/hook/vif_rules.py",):
            directory = os.path.dirname(self.root + path)
            if not os.path.isdir(directory):
                os.makedirs(directory)
            os.symlink(standin, self.root + path)
        for dev in ("vif5.0", "tap5.0"):
            _write(self.root + "/sys/class/net/%s/ifindex" % dev, b"7\n", 0o644)
        _write(self.script, fixture_bytes(generation))
        if generation.startswith("F-"):
            _write(self.root + "/usr/libexec/xenopsd/vif", _read(os.path.join(FIXTURES, "vif-F-stub")))

    def close(self):
        shutil.rmtree(self.root)

    def vif_patch(self, *args, **kw):
        """patches/vif-patch under python (a process), or without: its main()
        in this process (the same code, a tenth of the time)."""
        argv = list(args) + ["--root", self.root]
        python = kw.get("python")
        if python:
            return subprocess.run([python, VIF_PATCH] + argv, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
        out, err = io.StringIO(), io.StringIO()
        status = vifpatch.main(argv, out, err)
        return subprocess.CompletedProcess(argv, status, out.getvalue(), err.getvalue())

    def _setup(self, mode):
        _write(self.root + "/etc/xensource/network.conf", (mode + "\n").encode(), 0o644)
        module = self.root + "/sys/module/openvswitch"
        if mode == "openvswitch" and not os.path.isdir(module):
            os.makedirs(module)
        if mode != "openvswitch" and os.path.isdir(module):
            os.rmdir(module)

    def _store(self, path):
        """xenstore as xapi (A-E, keyed by domid) and xenopsd (F, by VM uuid) leave it."""
        keys = {"/local/domain/5/vm": "/vm/" + VM_UUID, "/vm/%s/uuid" % VM_UUID: VM_UUID,
                "/local/domain/5/device/vif/0/mac": "aa:00:00:00:00:05",
                "/local/domain/0/backend/vif/5/0/bridge": "xenbr0"}
        for private in ("/xapi/5/private/vif/0", "/xapi/%s/private/vif/0" % VM_UUID):
            keys.update({private + "/bridge-MAC": "fe:ff:ff:ff:ff:ff", private + "/bridge": "xenbr0",
                         private + "/MTU": "1500", private + "/other-config/ethtool-tx": "off",
                         private + "/vif-uuid": "0d9e1b8c-3c6e-4a0c-8d3f-6b7a8c9d0e1f",
                         private + "/network-uuid": "7a1f0c2d-9e8b-4c3a-b2d1-0f9e8d7c6b5a",
                         private + "/setup-vif-rules": self.root + "/usr/libexec/xenopsd/setup-vif-rules",
                         private + "/xenopsd-backend": "classic", private + "/trunks": ""})
        _write(path, "".join("%s\t%s\n" % item for item in sorted(keys.items())).encode(), 0o644)

    def _start(self, slot, script_bytes, event, kind, args, env_extra):
        """Start script_bytes as udev (or xenopsd) would for event on a kind
        device, in its own slot (calls, xenstore, script copies)."""
        text = script_bytes.decode("latin-1")
        pattern = r"(?<=[\s\"'=(])(%s)" % "|".join(re.escape(p) for p in SANDBOXED)
        directory = "%s/run-%s" % (self.root, slot)
        text = re.sub(pattern, lambda m: (directory + m.group(1)) if m.group(1) == VIF_REAL
                      else self.root + m.group(1), text)
        calls = directory + "/calls"
        if os.path.exists(calls):
            os.unlink(calls)
        env = {"PATH": self.root + "/bin:/usr/bin:/bin", "VIFTEST_CALLS": calls,
               "VIFTEST_STORE": directory + "/xenstore", "ACTION": event}
        self._store(env["VIFTEST_STORE"])
        if kind == "vif":
            env.update({"XENBUS_PATH": "backend/vif/%s/%s" % (DOMID, DEVID), "vif": "vif5.0"})
        else:
            env["INTERFACE"] = "tap5.0"
        env.update(env_extra)
        for name in [k for k in env if env[k] is None]:
            del env[name]
        call = GENERATIONS[self.generation]["call"]
        if call == "stub":
            _write(directory + VIF_REAL, text.encode("latin-1"))
            stub = _read(self.root + "/usr/libexec/xenopsd/vif").decode()
            stub = stub.replace(VIF_REAL, directory + VIF_REAL)
            runner = directory + "/vif"
            _write(runner, stub.encode())
            argv = ["bash", runner, event, "type_if=" + kind]
        else:
            runner = directory + "/vif"
            _write(runner, text.encode("latin-1"))
            # #!/bin/sh: on dom0 that is bash, which runs as sh in POSIX mode
            interpreter = ["bash"]
            if text.startswith("#!/bin/sh\n"):
                interpreter = ["bash", "--posix"]
            argv = interpreter + [runner, event]
            if call == "action-type":
                argv.append(kind)
            if args is not None:
                argv = interpreter + [runner] + list(args)
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return process, calls, directory

    def compare(self, patched, event, kind, mode="bridge", args=None, patched_env=None, **env):
        """Run the pristine fixture and patched side by side (two slots);
        (status, calls) of each."""
        self._setup(mode)
        patched_env = dict(env, **(patched_env or {}))
        started = [self._start(0, fixture_bytes(self.generation), event, kind, args, env),
                   self._start(1, patched, event, kind, args, patched_env)]
        results = []
        for process, calls, directory in started:
            process.communicate(timeout=60)
            recorded = []
            if os.path.exists(calls):
                # the slot's own directory shows in $0 only: name both alike
                recorded = _read(calls).decode("latin-1").replace(directory, "SLOT").splitlines()
            results.append((process.returncode, recorded))
        return results


def expected_hook_calls(generation, event, kind):
    dev = "%s%s.%s" % (kind, DOMID, DEVID)
    if event == "online" and kind == "vif":
        return ["vif_rules.py online " + dev]
    if event == "add" and kind == "tap":
        return ["vif_rules.py add " + dev]
    if event == "remove":
        return ["vif_rules.py offline " + dev]
    if event == "move" and kind == "vif" and GENERATIONS[generation]["move"]:
        return ["vif_rules.py online " + dev]
    return []


def is_ours(call):
    return call.startswith("vif_rules.py ") or call.startswith("logger -t vif-rules ")


def hook_calls(calls):
    return [c for c in calls if c.startswith("vif_rules.py ")]


# Calls that only a remove arm makes: the hook's teardown must come before them all.
REMOVE_ARM_CALLS = ("xenstore-rm ", "setup-vif-rules ", "ovs-vsctl ", "ovs-cfg-mod ", "service ",
                    "vif-hotplug ", "ip ")


@pytest.fixture(scope="module")
def patched_hosts():
    """Per generation: a sandbox host and its vif script patched by vif-patch."""
    hosts = {}
    yield hosts
    for host, _ in hosts.values():
        host.close()


def patched_host(hosts, generation):
    if generation not in hosts:
        host = Host(generation)
        done = host.vif_patch("apply", "--hook", host.hook, python=sys.executable)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "vif-patch: patched %s %s\n" % (generation, host.script)
        hosts[generation] = (host, _read(host.script))
    return hosts[generation]


# Every event and type in bridge mode (the mode vif-rules needs); in the
# generation's other mode (Open vSwitch) a vif coming and going.
CASES = [(g, e, k, "bridge") for g in sorted(GENERATIONS)
         for k in GENERATIONS[g]["types"] for e in EVENTS] + \
    [(g, e, "vif", m) for g in sorted(GENERATIONS) for m in GENERATIONS[g]["modes"][1:]
     for e in ("online", "remove")]


@pytest.mark.parametrize("generation,event,kind,mode", CASES,
                         ids=["%s-%s-%s-%s" % c for c in CASES])
def test_patched_script_calls_the_hook_and_keeps_every_call(patched_hosts, generation, event,
                                                            kind, mode):
    host, patched = patched_host(patched_hosts, generation)
    (status_before, before), (status_after, after) = host.compare(patched, event, kind, mode)
    if expected_hook_calls(generation, event, kind):
        assert before, "the unpatched script ran no command at all"
    assert status_after == status_before
    assert hook_calls(after) == expected_hook_calls(generation, event, kind)
    assert [c for c in after if not is_ours(c)] == before
    assert not [c for c in after if "stdout is not logged" in c]
    if hook_calls(after) and event == "remove":
        first = after.index(hook_calls(after)[0])
        assert not [c for c in after[:first] if c.startswith(REMOVE_ARM_CALLS)]
    elif hook_calls(after):
        # online, add, move: the arm's last command, after the device is connected
        assert after.index(hook_calls(after)[0]) == len(before)
    if event == "online" and kind == "vif":
        connected = [i for i, c in enumerate(after)
                     if c.startswith("xenstore-write ") and "hotplug-status" in c and "connected" in c]
        assert connected and connected[0] < after.index(hook_calls(after)[0])


@pytest.mark.parametrize("generation", sorted(GENERATIONS))
def test_a_failing_hook_is_logged_and_changes_nothing_else(patched_hosts, generation):
    host, patched = patched_host(patched_hosts, generation)
    for event, kind in (("online", "vif"), ("remove", "vif")) + \
            ((("add", "tap"),) if "tap" in GENERATIONS[generation]["types"] else ()):
        (status_before, before), (status_after, after) = host.compare(
            patched, event, kind, patched_env={"VIFTEST_HOOK_FAIL": "1"})
        assert status_after == status_before == 0
        assert [c for c in after if not is_ours(c)] == before
        logged = [shlex.split(c)[3] for c in after if c.startswith("logger -t vif-rules ")]
        dev = kind + "5.0"
        action = expected_hook_calls(generation, event, kind)[0].split()[1]
        assert logged == ["vif_rules: error: stand-in failure for " + dev,
                          "%s %s: hook failed (status 5), the port stays closed" % (action, dev)]


def test_a_missing_hook_is_logged_and_the_device_still_connects(patched_hosts):
    host, patched = patched_host(patched_hosts, "F-7.6")
    os.rename(host.hook, host.hook + ".gone")
    try:
        (status_before, before), (status_after, after) = host.compare(patched, "online", "vif")
    finally:
        os.rename(host.hook + ".gone", host.hook)
    assert status_after == status_before == 0
    assert [c for c in after if not is_ours(c)] == before
    logged = [shlex.split(c)[3] for c in after if c.startswith("logger -t vif-rules ")]
    assert logged[-1] == "online vif5.0: hook failed (status 127), the port stays closed"


def test_the_script_keeps_its_own_failure_status(patched_hosts):
    """A: the hook call follows the arm's last command; that command's failure
    is still the script's exit status."""
    host, patched = patched_host(patched_hosts, "A")
    connected = "/local/domain/0/backend/vif/5/0/hotplug-status"
    (status_before, before), (status_after, after) = host.compare(
        patched, "online", "vif", VIFTEST_FAIL_WRITE=connected)
    assert status_before == 1
    assert status_after == 1
    assert hook_calls(after) == ["vif_rules.py online vif5.0"]


@pytest.mark.parametrize("generation", ["F-7.1", "F-7.6", "E", "F-6.5"])
def test_the_port_is_torn_down_even_when_the_bridge_removal_fails(patched_hosts, generation):
    """On 7.6+ a failed setup-vif-rules clear ends the script (handle_error):
    the hook's offline has run before it; elsewhere the failure is only logged."""
    host, patched = patched_host(patched_hosts, generation)
    (status_before, before), (status_after, after) = host.compare(
        patched, "remove", "vif", VIFTEST_FAIL_SETUP="clear")
    assert [c for c in before if c.startswith("setup-vif-rules ")], "the fixture must clear rules"
    assert status_after == status_before
    if generation == "F-7.6":
        assert status_before == 1
    assert hook_calls(after) == ["vif_rules.py offline vif5.0"]
    assert [c for c in after if not is_ours(c)] == before


@pytest.mark.parametrize("generation", ["C2", "D", "E"])
def test_move_called_by_xapi_with_ids_and_no_xenbus_path(patched_hosts, generation):
    """xapi runs `vif move vif DOMID DEVID` itself, outside udev."""
    host, patched = patched_host(patched_hosts, generation)
    (status_before, before), (status_after, after) = host.compare(
        patched, "move", "vif", args=("move", "vif", DOMID, DEVID), XENBUS_PATH=None, vif=None)
    assert status_after == status_before == 0
    assert hook_calls(after) == ["vif_rules.py online vif5.0"]
    assert [c for c in after if not is_ours(c)] == before
    assert [c for c in before if c.startswith("brctl addif")]


# ---------------------------------------------------------------- the patch files

def _patch_tool():
    if not shutil.which("patch"):
        pytest.skip("GNU patch is not installed (build.sh APT_TEST_PACKAGES: patch)")


@pytest.mark.parametrize("generation", sorted(GENERATIONS))
def test_gnu_patch_applies_the_patch_file_exactly_as_vif_patch_does(tmp_path, generation):
    _patch_tool()
    patch_file = make_patches.patch_file(generation)
    target = tmp_path / "vif"
    target.write_bytes(fixture_bytes(generation))
    done = subprocess.run(["patch", "-F0", "--no-backup-if-mismatch", str(target), patch_file],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert done.returncode == 0, done.stdout
    assert "offset" not in done.stdout and "fuzz" not in done.stdout
    generation_ = vifpatch.generation_named(generation)
    expected = vifpatch.patched_text(fixture_bytes(generation).decode("latin-1"), generation_,
                                     vifpatch.DEFAULT_HOOK)
    assert target.read_bytes() == expected.encode("latin-1")
    done = subprocess.run(["patch", "-R", "-F0", "--no-backup-if-mismatch", str(target), patch_file],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert done.returncode == 0
    assert target.read_bytes() == fixture_bytes(generation)


@pytest.mark.parametrize("generation", sorted(GENERATIONS))
def test_the_patch_files_are_current(generation):
    assert _read(make_patches.patch_file(generation)).decode("latin-1") == \
        make_patches.diff_for(generation)


def test_every_generation_has_a_fixture_a_patch_file_and_a_test():
    names = sorted(g.name for g in vifpatch.GENERATIONS)
    assert names == sorted(GENERATIONS)
    for name in names:
        assert os.path.exists(make_patches.patch_file(name))
        assert vifpatch.recognise(fixture_bytes(name).decode("latin-1")).name == name


@pytest.mark.parametrize("generation", sorted(GENERATIONS))
def test_patched_scripts_parse_and_unpatch_to_the_same_bytes(generation):
    text = fixture_bytes(generation).decode("latin-1")
    patched = vifpatch.patched_text(text, vifpatch.generation_named(generation), vifpatch.DEFAULT_HOOK)
    assert subprocess.run(["bash", "-n"], input=patched.encode("latin-1")).returncode == 0
    assert vifpatch.strip_ours(patched) == text
    assert vifpatch.recognise(patched) is None
    assert vifpatch.is_ours(patched) and not vifpatch.is_ours(text)


# ---------------------------------------------------------------- vif-patch's states

@pytest.fixture
def host_f():
    host = Host("F-7.6")
    yield host
    host.close()


def _pythons():
    found = []
    for name in sorted(PYTHONS):
        if os.path.exists(PYTHONS[name]):
            found.append(name)
    return found


@pytest.mark.parametrize("generation", sorted(GENERATIONS))
def test_apply_once_revert_to_the_exact_bytes(generation):
    host = Host(generation)
    try:
        pristine = fixture_bytes(generation)
        kept = vifpatch.pristine_path(host.script, host.root)
        assert kept == host.root + "/var/lib/vif-rules/pristine" + script_path(generation)
        done = host.vif_patch("status")
        assert (done.returncode, done.stdout) == (1, "not-patched %s %s\n" % (generation, host.script))
        assert host.vif_patch("apply").returncode == 0
        once = _read(host.script)
        inode = os.stat(host.script).st_ino
        assert _read(kept) == pristine
        again = host.vif_patch("apply")
        assert again.stdout == "vif-patch: patched %s %s\n" % (generation, host.script)
        assert _read(host.script) == once and os.stat(host.script).st_ino == inode
        assert once.count(b"vif_rules_hook()") == 1
        assert stat.S_IMODE(os.stat(host.script).st_mode) == 0o755
        done = host.vif_patch("status")
        assert (done.returncode, done.stdout) == (0, "patched %s %s\n" % (generation, host.script))
        done = host.vif_patch("revert")
        assert (done.returncode, done.stdout) == (0, "vif-patch: reverted %s %s\n" % (generation, host.script))
        assert _read(host.script) == pristine
        assert stat.S_IMODE(os.stat(host.script).st_mode) == 0o755
        assert not os.path.exists(kept)
        done = host.vif_patch("revert")
        assert (done.returncode, done.stdout) == (0, "vif-patch: not patched: %s\n" % host.script)
        assert _read(host.script) == pristine
    finally:
        host.close()


@pytest.mark.parametrize("version", sorted(PYTHONS))
def test_vif_patch_runs_under_each_dom0_python(host_f, version):
    """Every state, by the entry point, under each dom0 Python."""
    python = PYTHONS[version]
    if not os.path.exists(python):
        pytest.skip("%s is not installed at %s" % (version, python))

    def vif_patch(*args):
        return host_f.vif_patch(*args, python=python)

    def state():
        code = ("import sys; sys.path.insert(0, %r); from vifrules.vifpatch import hook_state; "
                "s = hook_state(%r); sys.stdout.write('%%s %%s %%s' %% (s['state'], s['generation'], "
                "s['script']))" % (os.path.join(TOP, "xapi-plugin"), host_f.root))
        return subprocess.run([python, "-c", code], stdout=subprocess.PIPE,
                              universal_newlines=True).stdout

    # bytes that are no ASCII come back as they were
    pristine = _read(host_f.script) + b"# caf\xe9 \xff\n"
    _write(host_f.script, pristine)
    assert vif_patch("status").returncode == 1
    assert vif_patch("apply", "--hook", "/opt/old/vif_rules.py").returncode == 0
    done = vif_patch("apply", "--hook", host_f.hook)
    assert done.returncode == 0, done.stderr
    once = _read(host_f.script)
    assert once.count(host_f.hook.encode()) == 1 and b"/opt/old/" not in once
    assert vif_patch("apply", "--hook", host_f.hook).returncode == 0
    assert _read(host_f.script) == once
    assert state() == "patched F-7.6 " + host_f.script
    hotfix = pristine + b"# hotfix\n"
    _write(host_f.script, hotfix)
    assert state() == "changed F-7.6 " + host_f.script
    assert vif_patch("status").returncode == 4
    assert vif_patch("apply", "--hook", host_f.hook).returncode == 0
    assert vif_patch("revert").returncode == 0
    assert _read(host_f.script) == hotfix
    unknown = hotfix.replace(b"remove)\n", b"remove) \n")
    _write(host_f.script, unknown)
    done = vif_patch("apply")
    assert done.returncode == 3 and "refused" in done.stderr
    assert _read(host_f.script) == unknown
    assert state() == "unknown None " + host_f.script
    assert vif_patch("revert").returncode == 0
    assert vif_patch("status", "--hook", "bad hook").returncode == 2


def test_an_older_patch_of_ours_is_replaced_exactly_once(host_f):
    """The RPM upgrade runs the new apply over the old version's patch."""
    assert host_f.vif_patch("apply", "--hook", "/opt/old/vif_rules.py").returncode == 0
    current = vifpatch.patched_text(fixture_bytes("F-7.6").decode("latin-1"),
                                    vifpatch.generation_named("F-7.6"), host_f.hook)
    older = _read(host_f.script).decode("latin-1")
    older = older.replace("(vif-patch %s)" % vifpatch.PATCH_VERSION, "(vif-patch 0)")
    older = older.replace("the port stays closed", "port closed")
    older = older.replace('vif_rules_hook online "${dev}"', 'vif_rules_hook  online  "${dev}"')
    _write(host_f.script, older.encode("latin-1"))
    assert host_f.vif_patch("status").stdout.startswith("patched F-7.6 ")
    done = host_f.vif_patch("apply", "--hook", host_f.hook)
    assert done.returncode == 0, done.stderr
    assert _read(host_f.script) == current.encode("latin-1")
    assert host_f.vif_patch("revert").returncode == 0
    assert _read(host_f.script) == fixture_bytes("F-7.6")


def test_an_unknown_script_is_refused_and_untouched(host_f):
    edited = fixture_bytes("F-7.6").replace(b'        xenstore-write "${HOTPLUG_STATUS}" "connected"',
                                            b'        xenstore-write "${HOTPLUG_STATUS}"  "connected"')
    _write(host_f.script, edited)
    done = host_f.vif_patch("apply")
    assert done.returncode == 3
    assert "refused" in done.stderr and "no known vif script generation" in done.stderr
    assert done.stdout == ""
    assert _read(host_f.script) == edited
    assert not os.path.exists(host_f.root + "/var/lib/vif-rules")
    done = host_f.vif_patch("status")
    assert (done.returncode, done.stdout) == (3, "unknown - %s\n" % host_f.script)
    done = host_f.vif_patch("revert")
    assert done.returncode == 0 and "not patched" in done.stdout
    assert _read(host_f.script) == edited


@pytest.mark.parametrize("generation", sorted(GENERATIONS))
def test_each_generation_with_an_anchor_line_edited_is_unknown(generation):
    text = fixture_bytes(generation).decode("latin-1")
    for site in vifpatch.generation_named(generation).sites:
        anchor = (site.before + site.after)[0]
        edited = text.replace(anchor + "\n", anchor + " \n", 1)
        assert edited != text
        assert vifpatch.recognise(edited) is None


def test_a_hotfix_that_replaced_the_script_is_changed_and_left_alone(host_f):
    assert host_f.vif_patch("apply").returncode == 0
    hotfix = fixture_bytes("F-7.6").replace(b"# Test fixture", b"# Hotfix XS82E999\n# Test fixture")
    _write(host_f.script, hotfix)
    done = host_f.vif_patch("status")
    assert (done.returncode, done.stdout) == (4, "changed F-7.6 %s\n" % host_f.script)
    state = vifpatch.hook_state(host_f.root)
    assert state == {"state": "changed", "generation": "F-7.6", "script": host_f.script}
    done = host_f.vif_patch("revert")
    assert done.returncode == 4 and "left as it is" in done.stderr
    assert _read(host_f.script) == hotfix
    # nothing of ours is left in it: the old pristine copy is of no use any more
    assert host_f.vif_patch("status").stdout == "not-patched F-7.6 %s\n" % host_f.script


def test_apply_after_a_hotfix_patches_the_new_script(host_f):
    assert host_f.vif_patch("apply").returncode == 0
    hotfix = fixture_bytes("F-7.6").replace(b"# Test fixture", b"# Hotfix XS82E999\n# Test fixture")
    _write(host_f.script, hotfix)
    done = host_f.vif_patch("apply")
    assert done.returncode == 0, done.stderr
    assert host_f.vif_patch("status").returncode == 0
    assert host_f.vif_patch("revert").returncode == 0
    assert _read(host_f.script) == hotfix


def test_a_patched_script_edited_by_hand_is_changed_and_left_alone(host_f):
    assert host_f.vif_patch("apply").returncode == 0
    edited = _read(host_f.script) + b"# an edit by hand\n"
    _write(host_f.script, edited)
    assert host_f.vif_patch("status").returncode == 4
    for command in ("apply", "revert"):
        done = host_f.vif_patch(command)
        assert done.returncode == 4, command
        assert _read(host_f.script) == edited
    assert _read(vifpatch.pristine_path(host_f.script, host_f.root)) == fixture_bytes("F-7.6")


def test_no_script_is_unknown():
    root = tempfile.mkdtemp(prefix="vifpatch-")
    try:
        done = subprocess.run([sys.executable, VIF_PATCH, "status", "--root", root],
                              stdout=subprocess.PIPE, universal_newlines=True)
        assert (done.returncode, done.stdout) == (3, "unknown - %s%s\n" % (root, XAPI_SCRIPT))
        done = subprocess.run([sys.executable, VIF_PATCH, "apply", "--root", root],
                              stderr=subprocess.PIPE, universal_newlines=True)
        assert done.returncode == 3 and "no vif script" in done.stderr
        assert vifpatch.hook_state(root) == {"state": "unknown", "generation": None,
                                             "script": root + XAPI_SCRIPT}
    finally:
        shutil.rmtree(root)


def test_vif_real_is_found_before_the_xapi_script():
    host = Host("E")
    try:
        assert vifpatch.find_script(host.root) == host.root + XAPI_SCRIPT
        _write(host.root + VIF_REAL, fixture_bytes("F-7.6"))
        assert vifpatch.find_script(host.root) == host.root + VIF_REAL
        assert host.vif_patch("apply").stdout == "vif-patch: patched F-7.6 %s%s\n" % (host.root, VIF_REAL)
        assert _read(host.script) == fixture_bytes("E")
    finally:
        host.close()


def test_script_option_and_usage_errors(host_f):
    other = host_f.root + "/elsewhere/vif"
    _write(other, fixture_bytes("C"))
    done = subprocess.run([sys.executable, VIF_PATCH, "apply", "--script", other, "--root", host_f.root],
                          stdout=subprocess.PIPE, universal_newlines=True)
    assert done.stdout == "vif-patch: patched C %s\n" % other
    assert os.path.exists(host_f.root + "/var/lib/vif-rules/pristine/elsewhere/vif")
    assert _read(host_f.script) == fixture_bytes("F-7.6")
    for args in (["frobnicate"], [], ["apply", "--hook", "relative/hook"],
                 ["apply", "--hook", "/etc/hook; rm -rf /"], ["status", "--bogus", "x"], ["apply", "--hook"]):
        done = host_f.vif_patch(*args)
        assert done.returncode == 2, args
        assert "usage: vif-patch" in done.stderr
    assert _read(host_f.script) == fixture_bytes("F-7.6")


def test_a_known_checksum_names_the_generation_and_its_anchors_must_agree(monkeypatch, host_f):
    md5 = hashlib.md5(fixture_bytes("F-7.6")).hexdigest()
    monkeypatch.setitem(vifpatch.KNOWN_MD5, md5, ("F-7.6", "test"))
    assert vifpatch.recognise(fixture_bytes("F-7.6").decode("latin-1"), md5).name == "F-7.6"
    assert vifpatch.hook_state(host_f.root)["generation"] == "F-7.6"
    monkeypatch.setitem(vifpatch.KNOWN_MD5, md5, ("F-7.1", "a wrong entry"))
    assert vifpatch.recognise(fixture_bytes("F-7.6").decode("latin-1"), md5) is None
    assert vifpatch.hook_state(host_f.root)["state"] == "unknown"


def test_the_known_checksums_name_known_generations():
    for md5, (name, release) in vifpatch.KNOWN_MD5.items():
        assert re.match("^[0-9a-f]{32}$", md5)
        assert vifpatch.generation_named(name) is not None, name
        assert release
