"""Group commit: callers that arrive while a commit runs hand their change
over; the holder commits them all, each caller gets its own result."""

import json
import os
import signal
import stat
import subprocess
import sys
import time

import netbed


def _guest(n, port=None, ipv6=False):
    return netbed.Guest(port or "vif%d.0" % n, "x", "02:00:00:00:01:%02x" % n,
                        ["198.51.100.%d" % n], ipv6 and ["2001:db8::1:%x" % n] or [])


# Arrivals that share trie prefixes, a tap, several devices, IPv6 on some.
STORM = [_guest(10), _guest(1, ipv6=True), _guest(100), _guest(11, "vif11.1"),
         _guest(12, "tap12.0"), _guest(101, ipv6=True), _guest(2), _guest(21, "vif1.1")]


def _held_restore(bed, tmp_path, refuse=None):
    """iptables-legacy-restore behind a wrapper that logs each run; its
    first run waits for the test's go (so that callers pile up behind the
    lock); it may refuse input that adds rules to one chain (a change the
    kernel rejects). Returns (log, go)."""
    wrap = tmp_path / "wrap"
    wrap.mkdir()
    log, go = tmp_path / "restores.log", tmp_path / "go"
    script = wrap / "iptables-legacy-restore"
    refuse_line = ""
    if refuse:
        # As iptables-restore says it: the number of the line that failed.
        refuse_line = ('n=$(grep -n -e "-A %s " "$in" | head -n 1 | cut -d: -f1)\n'
                       '[ -n "$n" ] && { echo "iptables-restore: line $n failed" >&2; exit 1; }\n'
                       % refuse)
    script.write_text(
        "#!/bin/sh\nin=$(mktemp)\ncat > \"$in\"\necho run:$(grep -c -e '^-A VRF-' \"$in\")"
        ":$(grep -c -e '^-A VRF-vif13.0 ' \"$in\") >> %s\n"
        "i=0; while [ ! -e %s ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n%s"
        "exec iptables-legacy-restore \"$@\" < \"$in\"\n" % (log, go, refuse_line))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    bed.write_config(IPTABLES_RESTORE=str(script))
    return log, go


def _hook(bed, *args):
    return subprocess.Popen(
        ["ip", "netns", "exec", bed.ns("h"), sys.executable] + netbed.shebang_flags(netbed.HOOK)
        + [netbed.HOOK] + list(args), env=bed.env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def _wait_for(condition, seconds=30):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.02)


def _queued(bed):
    path = os.path.join(bed.state_dir, "queue")
    return [n for n in os.listdir(path) if not n.endswith(".tmp")] if os.path.isdir(path) else []


def _runs(log):
    return len(log.read_text().split()) if log.exists() else 0


def _serial_ruleset(tmp_path, guests):
    (tmp_path / "serial").mkdir()
    with netbed.NetBed(str(tmp_path / "serial"), backend="legacy") as serial:
        serial.host_rules("start")
        for guest in guests:
            serial.hook("online", guest.port, "--network", guest.network())
        return serial.ruleset()


def test_waiting_callers_are_committed_together(legacy_bed, tmp_path):
    bed = legacy_bed
    bed.host_rules("start")
    log, go = _held_restore(bed, tmp_path)
    guests = STORM
    first = _hook(bed, "online", guests[0].port, "--network", guests[0].network())
    _wait_for(lambda: _runs(log) == 1)  # the first holds the lock and commits slowly
    rest = [_hook(bed, "online", g.port, "--network", g.network()) for g in guests[1:]]
    # The holder took the lock at once: its own change never went through the queue.
    _wait_for(lambda: len(_queued(bed)) == 7)
    go.touch()
    for guest, process in zip(guests, [first] + rest):
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert json.loads(out) == {"vif": guest.port, "replaced": False}
    assert _runs(log) == 2, "8 events in %d iptables commits" % _runs(log)
    bed.write_config()
    assert bed.ruleset() == _serial_ruleset(tmp_path, guests)
    assert not os.listdir(os.path.join(bed.state_dir, "queue"))


def test_a_change_the_kernel_refuses_fails_alone(legacy_bed, tmp_path):
    bed = legacy_bed
    bed.host_rules("start")
    log, go = _held_restore(bed, tmp_path, refuse="VRF-vif13.0")
    guests = [_guest(n) for n in range(10, 16)]
    first = _hook(bed, "online", guests[0].port, "--network", guests[0].network())
    _wait_for(lambda: _runs(log) == 1)
    rest = [_hook(bed, "online", g.port, "--network", g.network()) for g in guests[1:]]
    _wait_for(lambda: len(_queued(bed)) == 5)
    go.touch()
    statuses = {}
    for guest, process in zip(guests, [first] + rest):
        out, err = process.communicate(timeout=120)
        statuses[guest.port] = process.returncode
    assert statuses.pop("vif13.0") == 5
    assert set(statuses.values()) == {0}
    # run: rules added to guest chains: of them vif13.0's. The first alone,
    # the group (refused), at once the group without vif13.0 (the others
    # waited one extra commit, no more), then vif13.0 alone (refused)
    runs = [line.split(":") for line in log.read_text().split()]
    assert runs[1][2] != "0" and int(runs[1][1]) > 4 * int(runs[1][2]), runs
    assert runs[2][2] == "0" and int(runs[2][1]) >= int(runs[1][1]) - int(runs[1][2]), runs
    bed.write_config()
    good = [g for g in guests if g.port != "vif13.0"]
    assert bed.ruleset() == _serial_ruleset(tmp_path, good)
    assert "vif13.0" not in bed.ruleset()


def test_a_killed_holder_loses_nothing(legacy_bed, tmp_path):
    bed = legacy_bed
    bed.host_rules("start")
    log, go = _held_restore(bed, tmp_path)
    guests = [_guest(n) for n in range(20, 24)]
    holder = _hook(bed, "online", guests[0].port, "--network", guests[0].network())
    _wait_for(lambda: _runs(log) == 1)
    waiting = [_hook(bed, "online", g.port, "--network", g.network()) for g in guests[1:]]
    _wait_for(lambda: len(_queued(bed)) == 3)
    os.kill(holder.pid, signal.SIGKILL)  # mid-commit, the others' changes still queued
    holder.communicate(timeout=30)
    go.touch()  # its orphaned restore goes on, holding the lock until it ends
    for process in waiting:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    bed.write_config()
    # The dead holder had recorded its change and marked it pending: the
    # next holder's repair commits it with the queued ones.
    assert bed.ruleset() == _serial_ruleset(tmp_path, guests)
    assert not os.listdir(os.path.join(bed.state_dir, "queue"))
    assert not os.listdir(os.path.join(bed.state_dir, "pending"))
    assert bed.host_rules("status").returncode == 0


def test_online_then_offline_of_one_vif_in_one_group_ends_offline(legacy_bed, tmp_path):
    bed = legacy_bed
    bed.host_rules("start")
    log, go = _held_restore(bed, tmp_path)
    blocker, guest = _guest(30), _guest(31)
    first = _hook(bed, "online", blocker.port, "--network", blocker.network())
    _wait_for(lambda: _runs(log) == 1)
    online = _hook(bed, "online", guest.port, "--network", guest.network())
    _wait_for(lambda: len(_queued(bed)) == 1)
    offline = _hook(bed, "offline", guest.port)
    _wait_for(lambda: len(_queued(bed)) == 2)
    go.touch()
    for process in (first, online, offline):
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    bed.write_config()
    assert "vif31.0" not in bed.ruleset()
    assert bed.ruleset() == _serial_ruleset(tmp_path, [blocker])


def test_a_queue_entry_its_killed_writer_left_half_written_is_cleared(legacy_bed):
    bed = legacy_bed
    bed.host_rules("start")
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid: a writer killed before it could rename its entry
    queue = os.path.join(bed.state_dir, "queue")
    os.makedirs(queue, exist_ok=True)
    left = os.path.join(queue, "%017.6f-%07d-1.tmp" % (time.time(), dead.pid))
    with open(left, "w") as handle:
        handle.write('{"kind": "apply", "vi')
    guest = _guest(40)
    bed.hook("online", guest.port, "--network", guest.network())
    assert not os.path.exists(left)
    assert os.listdir(queue) == []


# What the plugin's and host-rules' sync do once XAPI has said what runs:
# engine.sync with {name: (VifName, NicAddresses or None)}.
SYNC_DRIVER = """
import json, sys
sys.path.insert(0, %r)
from vifrules import config
from vifrules.addresses import VifName, parse_nic
from vifrules.backend import engine_for
running = {}
for name, network in json.loads(sys.argv[1]):
    vif = VifName(name)
    running[vif.name] = (vif, network and parse_nic(network) or None)
sys.stdout.write(json.dumps(engine_for(config.load()).sync(running)))
""" % os.path.join(netbed.TOP, "xapi-plugin")


def sync_in_place(ns, env, queued, go, first, online, start_offline, guests):
    """With the first caller holding the lock and the online of `later`
    queued: a sync handed over, then the offline of `later`. The sync sees
    the online and not the offline (each backend's test calls this)."""
    held, gone, later, new = guests
    # gone no longer runs; held and later run, XAPI without data for them
    # (their records stay); new runs with data.
    running = [[held.port, None], [later.port, None], [new.port, new.network()]]
    sync = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", SYNC_DRIVER, json.dumps(running)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(queued()) == 2)  # handed over, not waiting its turn
    offline = start_offline()
    _wait_for(lambda: len(queued()) == 3)
    go.touch()
    outs = {}
    for name, process in (("first", first), ("online", online), ("sync", sync),
                          ("offline", offline)):
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, (name, err)
        outs[name] = json.loads(out)
    report = outs["sync"]
    # In its place: after later's online (on record, so unchanged), before its offline.
    assert report["removed"] == [gone.port]
    assert report["applied"] == [new.port]
    assert sorted(report["unchanged"]) == sorted([held.port, later.port])
    assert report["without_data"] == []
    assert outs["offline"] == {"vif": later.port, "was_protected": True}


def test_a_sync_is_handed_over_and_committed_in_its_place(legacy_bed, tmp_path):
    bed = legacy_bed
    bed.host_rules("start")
    held, gone, later, new = _guest(40), _guest(41), _guest(42), _guest(43)
    bed.hook("online", gone.port, "--network", gone.network())
    log, go = _held_restore(bed, tmp_path)
    first = _hook(bed, "online", held.port, "--network", held.network())
    _wait_for(lambda: _runs(log) == 1)
    online = _hook(bed, "online", later.port, "--network", later.network())
    _wait_for(lambda: len(_queued(bed)) == 1)
    sync_in_place(bed.ns("h"), bed.env(), lambda: _queued(bed), go, first, online,
                  lambda: _hook(bed, "offline", later.port), (held, gone, later, new))
    bed.write_config()
    assert bed.ruleset() == _serial_ruleset(tmp_path, [held, new])
    assert not os.listdir(os.path.join(bed.state_dir, "queue"))
    assert not os.listdir(os.path.join(bed.state_dir, "pending"))
