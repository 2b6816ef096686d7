"""Group commit and interruption marks on the Open vSwitch backend (issues
12 and 11), on the real userspace Open vSwitch of tests/ovsbed.py: callers
that arrive while a commit runs hand their change over and the holder
commits them all in one bundle per bridge; a kill at any point leaves a
mark that the next operation or sync repairs. The bridge backend's twin is
tests/test_group_commit.py.

Results are compared with the flows of applying the intended VIFs one by
one in a fresh bed (the same ports at the same port numbers)."""

import itertools
import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

import netbed
import ovsbed
from vifrules import openflow
from vifrules.addresses import VifName

REAL_OFCTL = "/usr/bin/ovs-ofctl"
PYTHON27 = "/root/.pyenv/versions/2.7.18/bin/python"
_serial_beds = itertools.count()


def _guest(n, port=None, ipv6=False):
    return netbed.Guest(port or "vif%d.0" % n, "x", "02:00:00:00:02:%02x" % n,
                        ["198.51.100.%d" % n], ipv6 and ["2001:db8::2:%x" % n] or [])


# Arrivals of every kind: a vif and a tap of one NIC (one MAC, shared
# delivery keys), IPv6 on some (shared multicast groups), other devices.
STORM = [_guest(10), _guest(11, ipv6=True), _guest(10, "tap10.0"), _guest(12, "vif12.1"),
         _guest(13, ipv6=True), _guest(14), _guest(15, "tap15.0"), _guest(16)]
LOAD = [_guest(n, ipv6=(n % 3 == 0)) for n in range(60, 75)] + [_guest(60, "tap60.0")]
# Every port any test here uses, on every bed at the same OpenFlow number:
# internal ports (nothing behind them), for the tests look at flows.
PORTS = sorted(set([g.port for g in STORM + LOAD] +
                   ["vif%d.0" % n for n in list(range(20, 26)) + list(range(30, 36)) +
                    list(range(40, 44)) + [50, 51, 80, 81]]))


def _unavailable():
    from conftest import bed_unavailable
    return bed_unavailable() or ovsbed.available()


def _bed(path):
    os.makedirs(path)
    bed = ovsbed.OvsBed(path)
    bed.__enter__()
    try:
        bed.add_internal_ports([(name, 20 + i) for i, name in enumerate(PORTS)])
        bed.host_rules("start")
    except BaseException:
        bed.destroy()
        raise
    return bed


@pytest.fixture
def ovs(tmp_path):
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    bed = _bed(str(tmp_path / "bed"))
    try:
        yield bed
    finally:
        bed.destroy()


def _serial_flows(tmp_path, guests):
    """The flows of applying guests one by one (each its own event), in a fresh bed."""
    bed = _bed(str(tmp_path / ("serial-%d" % next(_serial_beds))))
    try:
        for guest in guests:
            bed.hook("online", guest.port, "--network", guest.network())
        return bed.flows()
    finally:
        bed.destroy()


def _wrapped_ofctl(bed, tmp_path, refuse=None, hold=True):
    """ovs-ofctl behind a wrapper on the hooks' PATH that logs each bundle
    ('bundle:<add lines>:<of them the refused VIF's>'). With hold, the first
    bundle waits for the test's go file (so that callers pile up behind the
    lock) or its abort file (it then ends having changed nothing: a commit
    that never reached the switch). With refuse, that VIF's flows get an
    action the switch rejects (a group that does not exist): the real
    switch refuses the bundle and names the flow. Returns (the hooks' env,
    log, go, abort)."""
    wrap = tmp_path / "wrap"
    wrap.mkdir()
    log, go, abort, held = (tmp_path / "bundles.log", tmp_path / "go", tmp_path / "abort",
                            tmp_path / "held")
    cookie = "none"
    if refuse:
        cookie = openflow.cookie_text(openflow.vif_cookie(VifName(refuse)))
    wait = ""
    if hold:
        wait = ('if mkdir %s 2>/dev/null; then\n'
                '  i=0; while [ ! -e %s ] && [ ! -e %s ] && [ $i -lt 1200 ]; do '
                'sleep 0.05; i=$((i+1)); done\n'
                '  [ -e %s ] && exit 1\nfi\n' % (held, go, abort, abort))
    script = wrap / "ovs-ofctl"
    script.write_text(
        '#!/bin/sh\n[ "$1" = "--bundle" ] || exec %s "$@"\n'
        'in=$(mktemp -p %s)\ncat > "$in"\n'
        'echo "bundle:$(grep -c "^add " "$in"):$(grep -c -e "^add .*cookie=%s," "$in")" >> %s\n'
        '%s'
        'sed -i -e "s/^\\(add .*cookie=%s,.*\\) actions=.*$/\\1 actions=group:7/" "$in"\n'
        'exec %s "$@" < "$in"\n' % (REAL_OFCTL, tmp_path, cookie, log, wait, cookie,
                                    REAL_OFCTL))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = bed.env()
    env["PATH"] = "%s:%s" % (wrap, env.get("PATH", "/usr/bin:/bin"))
    return env, log, go, abort


def _hook(bed, env, *args, python=None):
    return subprocess.Popen(
        ["ip", "netns", "exec", bed.ns("h"), python or sys.executable]
        + netbed.shebang_flags(netbed.HOOK) + [netbed.HOOK] + list(args), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _online(bed, env, guest):
    return _hook(bed, env, "online", guest.port, "--network", guest.network())


def _wait_for(condition, seconds=30):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.02)


def _listing(bed, name):
    path = os.path.join(bed.state_dir, name)
    return [n for n in os.listdir(path) if not n.endswith(".tmp")] if os.path.isdir(path) else []


def _queued(bed):
    return _listing(bed, "queue")


def _pending(bed):
    return _listing(bed, "pending")


def _bundles(log):
    return [line.split(":")[1:] for line in log.read_text().split()] if log.exists() else []


def _own_flows(bed, port):
    return [l for l in bed.flows(openflow.vif_cookie(VifName(port))).splitlines() if l]


def _assert_settled(bed):
    assert not _queued(bed) and not _pending(bed)
    status = bed.host_rules("status", check=False)
    assert status.returncode == 0, status.stdout + status.stderr


def _pile_up(bed, env, log, guests):
    """The first guest's online holds the lock (its bundle held), the
    others' pile up behind it in the queue. Returns their processes."""
    first = _online(bed, env, guests[0])
    _wait_for(lambda: len(_bundles(log)) == 1)
    rest = [_online(bed, env, g) for g in guests[1:]]
    _wait_for(lambda: len(_queued(bed)) == len(rest))
    return [first] + rest


def _one_fails_alone(bed, env, log, go, guests, failing):
    """Pile guests up, let them go: failing exits with COMMAND_FAILED, every
    other with 0. Returns failing's stderr."""
    processes = _pile_up(bed, env, log, guests)
    go.touch()
    statuses, errors = {}, {}
    for guest, process in zip(guests, processes):
        out, err = process.communicate(timeout=120)
        statuses[guest.port], errors[guest.port] = process.returncode, err
    assert statuses.pop(failing) == 5, errors[failing]
    assert "VIF_RULES_COMMAND_FAILED" in errors[failing]
    assert set(statuses.values()) == {0}, errors
    return errors[failing]


def test_waiting_callers_are_committed_together(ovs, tmp_path):
    env, log, go, abort = _wrapped_ofctl(ovs, tmp_path)
    processes = _pile_up(ovs, env, log, STORM)
    go.touch()
    for guest, process in zip(STORM, processes):
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert json.loads(out) == {"vif": guest.port, "replaced": False}
    assert len(_bundles(log)) == 2, "8 events in %d bundles" % len(_bundles(log))
    assert ovs.flows() == _serial_flows(tmp_path, STORM)
    _assert_settled(ovs)


def test_an_invalid_change_fails_alone_and_changes_nothing(ovs, tmp_path):
    env, log, go, abort = _wrapped_ofctl(ovs, tmp_path)
    guests = [_guest(n) for n in range(20, 24)]
    processes = _pile_up(ovs, env, log, guests)
    records = sorted(os.listdir(ovs.state_dir))
    bad_network = json.loads(_guest(25).network())
    bad_network["mac"] = "02:00:00:00:02:zz"
    bad = [_hook(ovs, env, "online", "vif25.0", "--network", json.dumps(bad_network)),
           _hook(ovs, env, "online", "vif25.0;reboot", "--network", _guest(25).network()),
           _hook(ovs, env, "offline", "eth1")]
    for process in bad:  # rejected at once, while the holder still holds the lock
        out, err = process.communicate(timeout=30)
        assert process.returncode == 2, err
        assert "VIF_RULES_INVALID_ARGUMENT" in err
    assert len(_queued(ovs)) == 3 and len(_bundles(log)) == 1
    assert sorted(os.listdir(ovs.state_dir)) == records
    go.touch()
    for guest, process in zip(guests, processes):
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert json.loads(out)["vif"] == guest.port
    assert len(_bundles(log)) == 2
    assert not os.path.exists(os.path.join(ovs.state_dir, "vif25.0.json"))
    assert ovs.flows() == _serial_flows(tmp_path, guests)
    _assert_settled(ovs)


def test_a_bundle_refused_for_one_vif_leaves_the_others_protected(ovs, tmp_path):
    env, log, go, abort = _wrapped_ofctl(ovs, tmp_path, refuse="vif33.0")
    guests = [_guest(n) for n in range(30, 36)]
    _one_fails_alone(ovs, env, log, go, guests, "vif33.0")
    # add lines, of them vif33.0's: the first alone; the group (refused, the
    # switch named vif33.0's flow); at once the others together without it
    # (their one extra commit); vif33.0 alone (refused); its fail-closed rebuild
    runs = _bundles(log)
    assert len(runs) == 5, runs
    assert runs[1][1] != "0" and int(runs[1][0]) > 4 * int(runs[1][1]), runs
    assert runs[2][1] == "0" and int(runs[2][0]) >= int(runs[1][0]) - int(runs[1][1]), runs
    assert runs[3][1] != "0" and runs[4][1] == "0", runs
    good = [g for g in guests if g.port != "vif33.0"]
    assert not _own_flows(ovs, "vif33.0")
    assert not os.path.exists(os.path.join(ovs.state_dir, "vif33.0.json"))
    assert ovs.flows() == _serial_flows(tmp_path, good)
    _assert_settled(ovs)


def test_a_device_filter_refused_for_one_vif_leaves_the_others_protected(ovs, tmp_path):
    """tc refuses one VIF's device filter (another kind of filter, someone
    else's, holds its place): that VIF fails alone and stays closed, the
    others are committed without it, and the other filter stays as it was.
    A device with a clsact qdisc (not ours) takes the filter in it."""
    env, log, go, abort = _wrapped_ofctl(ovs, tmp_path)
    guests = [_guest(n) for n in range(40, 44)]
    ovs.run("h", ["tc", "qdisc", "add", "dev", "vif41.0", "clsact"])
    ovs.run("h", ["tc", "qdisc", "add", "dev", "vif42.0", "ingress"])
    foreign = ["tc", "filter", "add", "dev", "vif42.0", "parent", "ffff:fff2", "pref", "9",
               "protocol", "all", "u32", "match", "u32", "0", "0", "classid", "1:1"]
    ovs.run("h", foreign)
    assert "tc " in _one_fails_alone(ovs, env, log, go, guests, "vif42.0")
    assert not _own_flows(ovs, "vif42.0")
    assert not os.path.exists(os.path.join(ovs.state_dir, "vif42.0.json"))
    good = [g for g in guests if g.port != "vif42.0"]
    assert ovs.flows() == _serial_flows(tmp_path, good)
    kept = ovs.run("h", ["tc", "filter", "show", "dev", "vif42.0", "parent", "ffff:fff2"]).stdout
    assert " u32 " in kept and " bpf " not in kept, kept
    clsact = ovs.run("h", ["tc", "qdisc", "show", "dev", "vif41.0"]).stdout
    assert "clsact" in clsact, clsact
    assert " bpf " in ovs.run("h", ["tc", "filter", "show", "dev", "vif41.0", "ingress"]).stdout
    _assert_settled(ovs)


@pytest.mark.parametrize("orphan", ["commits", "fails"])
def test_a_killed_holder_loses_nothing(ovs, tmp_path, orphan):
    env, log, go, abort = _wrapped_ofctl(ovs, tmp_path)
    guests = [_guest(n) for n in range(40, 44)]
    processes = _pile_up(ovs, env, log, guests)
    holder, waiting = processes[0], processes[1:]
    os.kill(holder.pid, signal.SIGKILL)  # mid-commit, the others' changes still queued
    holder.communicate(timeout=30)
    # Its bundle, holding the lock until it ends, goes on or never reaches
    # the switch: the holder's change is recorded and marked either way.
    (go if orphan == "commits" else abort).touch()
    for guest, process in zip(guests[1:], waiting):
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert json.loads(out) == {"vif": guest.port, "replaced": False}
    assert ovs.flows() == _serial_flows(tmp_path, guests)
    _assert_settled(ovs)


def test_online_then_offline_of_one_vif_in_one_group_ends_offline(ovs, tmp_path):
    env, log, go, abort = _wrapped_ofctl(ovs, tmp_path)
    blocker, guest = _guest(50), _guest(51)
    first = _online(ovs, env, blocker)
    _wait_for(lambda: len(_bundles(log)) == 1)
    online = _online(ovs, env, guest)
    _wait_for(lambda: len(_queued(ovs)) == 1)
    offline = _hook(ovs, env, "offline", guest.port)
    _wait_for(lambda: len(_queued(ovs)) == 2)
    go.touch()
    results = []
    for process in (first, online, offline):
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        results.append(json.loads(out))
    assert results[1:] == [{"vif": guest.port, "replaced": False},
                           {"vif": guest.port, "was_protected": True}]
    assert len(_bundles(log)) == 2
    assert not _own_flows(ovs, guest.port)
    assert ovs.flows() == _serial_flows(tmp_path, [blocker])
    _assert_settled(ovs)


def test_mixed_events_from_8_parallel_callers_end_in_the_intended_flows(ovs, tmp_path):
    """80 online/offline events (addresses added and dropped, IPv6 on and
    off) for 16 VIFs from 8 parallel callers, half of them under Python 2.7:
    each caller owns two VIFs, so the last event of each is what is meant."""
    env, log, go, abort = _wrapped_ofctl(ovs, tmp_path, hold=False)
    rng = random.Random(11)
    scripts, final = [], {}
    for caller in range(8):
        owned = LOAD[2 * caller:2 * caller + 2]
        events = []
        for i in range(10):
            guest = rng.choice(owned)
            if rng.random() < 0.3:
                events.append(("offline", guest.port))
                final[guest.port] = None
                continue
            n = int(guest.mac.split(":")[-1], 16)
            ipv4 = guest.ipv4 + rng.choice([[], ["203.0.113.%d" % n]])
            ipv6 = rng.choice([[], ["2001:db8::2:%x" % n], ["2001:db8::3:%x" % n]])
            events.append(("online", guest.port, "--network", guest.network(ipv4, ipv6)))
            final[guest.port] = netbed.Guest(guest.port, "x", guest.mac, ipv4, ipv6)
        scripts.append(events)
    python27 = os.path.exists(PYTHON27) and PYTHON27 or None
    failures = []

    def caller(index):
        for args in scripts[index]:
            process = _hook(ovs, env, *args, python=(index % 2 and python27) or None)
            out, err = process.communicate(timeout=120)
            if process.returncode != 0:
                failures.append((args[:2], process.returncode, err))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not failures, failures
    intended = [final[g.port] for g in LOAD if final.get(g.port) is not None]
    assert len(intended) < len(final)  # some end offline
    assert ovs.flows() == _serial_flows(tmp_path, intended)
    assert len(_bundles(log)) <= 80
    sys.stderr.write("80 events in %d bundles\n" % len(_bundles(log)))
    _assert_settled(ovs)


@pytest.mark.parametrize("then", ["offline", "sync", "another-event"])
def test_a_teardown_killed_between_record_and_flows_leaves_no_flows(ovs, tmp_path, then):
    guests = [_guest(80), _guest(81, ipv6=True)]
    for guest in guests:
        ovs.hook("online", guest.port, "--network", guest.network())
    env, log, go, abort = _wrapped_ofctl(ovs, tmp_path)
    victim = guests[1]
    teardown = _hook(ovs, env, "offline", victim.port)
    _wait_for(lambda: len(_bundles(log)) == 1)  # its record is gone, its bundle held
    os.kill(teardown.pid, signal.SIGKILL)
    teardown.communicate(timeout=30)
    abort.touch()  # the bundle never reaches the switch
    assert not os.path.exists(os.path.join(ovs.state_dir, victim.port + ".json"))
    assert _own_flows(ovs, victim.port), "the kill left the guest its flows (is the test sound?)"
    status = ovs.host_rules("status", check=False)  # waits for the lock the bundle held
    assert status.returncode == 3 and "did not finish" in status.stdout, status.stdout
    if then == "offline":
        assert json.loads(ovs.hook("offline", victim.port).stdout) == {
            "vif": victim.port, "was_protected": True}
    elif then == "sync":
        ovs.host_rules("sync")
    else:  # any operation that finds the mark finishes the job first
        ovs.hook("online", guests[0].port, "--network", guests[0].network())
    assert not _own_flows(ovs, victim.port)
    assert ovs.flows() == _serial_flows(tmp_path, guests[:1])
    _assert_settled(ovs)


def test_the_failing_vif_is_read_from_what_ovs_ofctl_says():
    """Both ways ovs-ofctl names a refused flow (as it says them: its own
    parse error names the input line, the switch's error the flow mod)."""
    from vifrules.ovs import _failing_lines, _vifs_of_lines
    vif, other = VifName("vif33.0"), VifName("tap3.0")
    cookie = openflow.cookie_text(openflow.vif_cookie(vif))
    lines = ["delete cookie=%s/-1" % cookie,
             "add table=0,priority=40000,cookie=%s,in_port=7,ip actions=drop" % cookie,
             "add table=1,priority=40000,cookie=%s,in_port=7,ip actions=group:7" % cookie,
             "add table=1,priority=40000,cookie=%s,in_port=4,ip actions=resubmit(,2)"
             % openflow.cookie_text(openflow.vif_cookie(other)), ""]
    switch_said = (
        "Error OFPBAC_BAD_OUT_GROUP for: OFPT_FLOW_MOD (OF1.4) (xid=0x7): ADD table:1 "
        "priority=40000,ip,in_port=7 cookie:0x%x actions=group:7\n"
        "Error OFPBFC_MSG_FAILED for: OFPT_BUNDLE_CONTROL (OF1.4) (xid=0xa):\n"
        " bundle_id=0 type=COMMIT_REQUEST flags=atomic ordered\n"
        "ovs-ofctl: talking to unix:/run/openvswitch/xenbr0.mgmt (Protocol error)\n"
        % openflow.vif_cookie(vif))
    assert _failing_lines(switch_said, lines) == [2]
    assert _failing_lines("ovs-ofctl: -:4: unknown action foo\n", lines) == [3]
    assert _vifs_of_lines([lines[2]]) == ["vif33.0"]
    assert _vifs_of_lines([lines[3]]) == ["tap3.0"]
    assert _failing_lines("ovs-ofctl: xenbr0 is not a bridge or a socket\n", lines) == []


def test_a_sync_is_handed_over_and_committed_in_its_place(ovs, tmp_path):
    from test_group_commit import sync_in_place
    held, gone, later, new = _guest(40), _guest(41), _guest(42), _guest(43)
    ovs.hook("online", gone.port, "--network", gone.network())
    env, log, go, abort = _wrapped_ofctl(ovs, tmp_path)
    first = _online(ovs, env, held)
    _wait_for(lambda: len(_bundles(log)) == 1)
    online = _online(ovs, env, later)
    _wait_for(lambda: len(_queued(ovs)) == 1)
    sync_in_place(ovs.ns("h"), env, lambda: _queued(ovs), go, first, online,
                  lambda: _hook(ovs, env, "offline", later.port), (held, gone, later, new))
    # the online alone (held), the online, the sync's rebuild, the offline
    assert len(_bundles(log)) == 4, _bundles(log)
    assert ovs.flows() == _serial_flows(tmp_path, [held, new])
    _assert_settled(ovs)
