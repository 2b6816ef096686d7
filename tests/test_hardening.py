"""Issue 11's reproduced cases, each on a real namespace bridge: a failed,
killed or repeated operation never leaves a guest more access than it should
have, and the records never claim what the kernel does not hold."""

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

import netbed

TOOLS = ("ebtables-nft", "iptables-legacy", "ip6tables-legacy", "arptables-legacy")


class Faults(object):
    """Wrappers in front of the real tools; behaviour per tool name chosen
    by files in a directory, so a test changes it between calls."""

    def __init__(self, bed, tmp_path):
        self.bed = bed
        self.dir = tmp_path / "faults"
        self.dir.mkdir()
        wrap = tmp_path / "wrap"
        wrap.mkdir()
        keys = {"EBTABLES": "ebtables-nft", "IPTABLES": "iptables-legacy",
                "IP6TABLES": "ip6tables-legacy", "ARPTABLES": "arptables-legacy"}
        for tool in TOOLS:
            for suffix in ("", "-restore", "-save"):
                name = tool + suffix
                script = wrap / name
                script.write_text(
                    "#!/bin/sh\n"
                    "d=%s\n"
                    "[ -e $d/%s.fail ] && { echo 'injected failure' >&2; exit 1; }\n"
                    "if [ -e $d/%s.times ]; then n=$(cat $d/%s.times);"
                    " if [ $n -gt 0 ]; then echo $((n-1)) > $d/$(basename $0).times;"
                    " echo 'injected failure' >&2; exit 1; fi; fi\n"
                    "[ -e $d/%s.garbage ] && { echo 'Segmentation fault'; exit 0; }\n"
                    "[ -e $d/%s.slow ] && sleep $(cat $d/%s.slow)\n"
                    "if [ -e $d/%s.slowonce ]; then t=$(cat $d/%s.slowonce);"
                    " rm -f $d/%s.slowonce; sleep $t; fi\n"
                    "exec %s \"$@\"\n" % ((self.dir,) + (name,) * 10))
                script.chmod(script.stat().st_mode | stat.S_IEXEC)
        bed.write_config(**dict((key, str(wrap / value)) for key, value in keys.items()))

    def set(self, name, kind, value=""):
        (self.dir / ("%s.%s" % (name, kind))).write_text(value)

    def clear(self):
        for path in self.dir.iterdir():
            path.unlink()


@pytest.fixture
def faults(legacy_bed, tmp_path):
    return Faults(legacy_bed, tmp_path)


def _guest_rules(bed, vif):
    """Every line of the dumps that names the VIF's chains or port."""
    return [line for line in bed.ruleset().splitlines()
            if vif in line]


def _record(bed, vif):
    return os.path.join(bed.state_dir, vif + ".json")


def _fresh_ruleset(tmp_path, steps):
    """The ruleset a clean run of steps ends in, in a fresh bed."""
    (tmp_path / "fresh").mkdir()
    with netbed.NetBed(str(tmp_path / "fresh"), backend="legacy") as fresh:
        fresh.host_rules("start")
        for args in steps:
            fresh.hook(*args)
        return fresh.ruleset()


def test_failed_teardown_is_retried_until_nothing_is_left(legacy_bed, faults, tmp_path):
    bed = legacy_bed
    bed.protect_all()
    g1 = bed.guests[0]
    faults.set("ebtables-nft-restore", "fail")
    failed = bed.hook("offline", g1.port, check=False)
    assert failed.returncode == 5 and "VIF_RULES_COMMAND_FAILED" in failed.stderr
    assert "VRF-vif1.0" in bed.ruleset(), "the fault did keep ebtables' rules"
    faults.clear()
    again = bed.hook("offline", g1.port)
    assert json.loads(again.stdout)["was_protected"] is True
    assert not _guest_rules(bed, g1.port)
    assert bed.host_rules("status").returncode == 0
    steps = [("online", g.port, "--network", g.network()) for g in bed.guests[1:]]
    assert bed.ruleset() == _fresh_ruleset(tmp_path, steps)


def test_corrupt_record_never_skips_the_rules(legacy_bed):
    bed = legacy_bed
    bed.protect_all()
    with open(_record(bed, "vif1.0"), "w") as handle:
        handle.write("{")
    status = bed.host_rules("status", check=False)
    assert status.returncode == 3 and "corrupt record" in status.stdout
    result = bed.hook("offline", "vif1.0")
    assert json.loads(result.stdout)["was_protected"] is True
    assert not _guest_rules(bed, "vif1.0")
    assert not os.path.exists(_record(bed, "vif1.0"))
    assert bed.host_rules("status").returncode == 0


def test_failed_reapply_fails_closed_with_the_old_addresses_gone(legacy_bed, faults, tmp_path):
    """The guest had IPv6; the re-apply without it fails in ebtables: every
    rule of the guest goes, the old IPv6 chain included, and a clean re-apply
    afterwards leaves no duplicate dispatch entry."""
    bed = legacy_bed
    bed.protect_all()
    g1 = bed.guests[0]
    for tool in ("ebtables-nft-restore", "ip6tables-legacy-restore"):
        faults.set(tool, "times", "2")  # the event, then the host rebuild
    result = bed.hook("online", g1.port, "--network", g1.network(ipv6=[]), check=False)
    assert result.returncode == 5
    assert not _guest_rules(bed, g1.port), "fail closed: nothing of vif1.0 is left"
    assert not os.path.exists(_record(bed, g1.port))
    faults.clear()
    bed.hook("online", g1.port, "--network", g1.network(ipv6=[]))
    steps = [("online", g.port, "--network", g.network()) for g in bed.guests[1:]]
    steps.append(("online", g1.port, "--network", g1.network(ipv6=[])))
    assert bed.ruleset() == _fresh_ruleset(tmp_path, steps)


def test_killed_apply_is_completed_by_the_next_operation(legacy_bed, faults, tmp_path):
    """A hook killed while its restore runs: the next event (another VIF)
    finds the mark it left, rebuilds from the records, and every guest ends
    exactly as a clean run leaves it."""
    bed = legacy_bed
    bed.protect_all()
    bed.hook("offline", "vif2.0")
    faults.set("iptables-legacy-restore", "slow", "1")
    g2 = bed.guests[1]
    process = subprocess.Popen(
        ["ip", "netns", "exec", bed.ns("h"), sys.executable] + netbed.shebang_flags(netbed.HOOK)
        + [netbed.HOOK, "online", g2.port, "--network", g2.network()],
        env=bed.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)
    _kill_tree(process)
    faults.clear()
    assert os.listdir(os.path.join(bed.state_dir, "pending")) == ["vif2.0"]
    status = bed.host_rules("status", check=False)
    assert status.returncode == 3 and "did not finish" in status.stdout
    new = netbed.Guest("vif5.0", "g5", "02:00:00:00:00:05", ["192.0.2.15"], [])
    bed.hook("online", new.port, "--network", new.network())
    assert os.listdir(os.path.join(bed.state_dir, "pending")) == []
    steps = [("online", g.port, "--network", g.network()) for g in bed.guests]
    steps.append(("online", new.port, "--network", new.network()))
    assert bed.ruleset() == _fresh_ruleset(tmp_path, steps)
    assert bed.host_rules("status").returncode == 0


def _kill_tree(process):
    """SIGKILL the hook itself (the child of 'ip netns exec', which execs)."""
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)


def test_orphaned_restore_holds_the_lock_until_it_ends(legacy_bed, faults):
    """The hook is killed while its ebtables restore still runs; an offline
    that comes next waits for the orphan, then removes everything: the
    orphan never commits after the teardown."""
    bed = legacy_bed
    bed.protect_all()
    bed.hook("offline", "vif2.0")
    faults.set("ebtables-nft-restore", "slowonce", "5")  # the online's restore only
    g2 = bed.guests[1]
    process = subprocess.Popen(
        ["ip", "netns", "exec", bed.ns("h"), sys.executable] + netbed.shebang_flags(netbed.HOOK)
        + [netbed.HOOK, "online", g2.port, "--network", g2.network()],
        env=bed.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.6)
    _kill_tree(process)
    started = time.time()
    bed.hook("offline", g2.port)
    waited = time.time() - started
    time.sleep(max(0, 6 - waited))  # had the orphan outlived the lock, it has committed now
    assert not _guest_rules(bed, g2.port)
    assert waited > 3, "offline waited for the orphaned restore"


def test_command_timeout_is_an_error_of_its_own(legacy_bed, faults):
    bed = legacy_bed
    bed.protect_all()
    conf = open(bed.conf).read()
    with open(bed.conf, "a") as handle:
        handle.write('COMMAND_TIMEOUT="1"\n')
    faults.set("iptables-legacy-restore", "slow", "5")
    g1 = bed.guests[0]
    started = time.time()
    result = bed.hook("online", g1.port, "--network", g1.network(ipv4=["192.0.2.31"]),
                      check=False)
    assert time.time() - started < 4.5
    assert result.returncode == 10 and "VIF_RULES_COMMAND_TIMEOUT" in result.stderr
    with open(bed.conf, "w") as handle:
        handle.write(conf)


@pytest.mark.parametrize("failing", ["ebtables-nft-restore", "iptables-legacy-restore",
                                     "ip6tables-legacy-restore", "arptables-legacy"])
def test_start_fails_closed_whatever_family_fails(legacy_bed, faults, failing):
    bed = legacy_bed
    faults.set(failing, "fail")
    result = bed.host_rules("start", check=False)
    assert result.returncode != 0
    family = failing.split("-")[0]
    assert family in result.stderr, "the error names what failed"
    policies = {
        "ebtables": bed.run("h", ["ebtables-nft", "-L", "FORWARD"]).stdout,
        "iptables": bed.run("h", ["iptables-legacy", "-S", "FORWARD"]).stdout,
        "ip6tables": bed.run("h", ["ip6tables-legacy", "-S", "FORWARD"]).stdout,
        "arptables": bed.run("h", ["arptables-legacy", "-L", "FORWARD", "-n"]).stdout,
    }
    for name, text in policies.items():
        if failing == "arptables-legacy" and name == "arptables":
            continue  # the one tool that sets it is the one that fails
        assert "DROP" in [line for line in text.splitlines() if "FORWARD" in line][0], \
            (name, text)
    faults.clear()
    g1 = bed.guests[0]
    bed.hook("online", g1.port, "--network", g1.network())
    assert bed.host_rules("status").returncode == 0


def test_trusted_uplinks_given_to_start_stay_in_force(legacy_bed):
    bed = legacy_bed
    bed.write_config(TRUSTED_INTERFACES="eth1 eth7")
    bed.host_rules("start", "eth1")
    for guest in bed.guests:
        bed.hook("online", guest.port, "--network", guest.network())
    assert "eth7" not in bed.ruleset()
    bed.host_rules("start")  # no list: the one in force stays
    assert "eth7" not in bed.ruleset()
    status = bed.host_rules("status")
    assert "trusted uplinks: eth1" in status.stdout
    bed.run("h", ["iptables-legacy", "-F", "VR-FORWARD"])  # a flush: the next event rebuilds
    bed.hook("online", "vif1.0", "--network", bed.guests[0].network())
    assert "eth7" not in bed.ruleset()


def test_read_only_state_dir_is_an_error_never_a_success(legacy_bed):
    bed = legacy_bed
    bed.protect_all()
    before = bed.ruleset()
    os.chmod(bed.state_dir, 0o555)
    try:
        # root ignores permission bits: make it read-only for real with a mount
        subprocess.run(["mount", "--bind", bed.state_dir, bed.state_dir], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", bed.state_dir], check=True)
        try:
            online = bed.hook("online", "vif2.0", "--network",
                              bed.guests[1].network(ipv4=["192.0.2.42"]), check=False)
            assert online.returncode == 9, online.stderr
            assert "VIF_RULES_STATE_ERROR" in online.stderr
            assert "Traceback" not in online.stderr
            assert bed.ruleset() == before, "nothing changed"
            offline = bed.hook("offline", "vif1.0", check=False)
            assert offline.returncode == 9 and "VIF_RULES_STATE_ERROR" in offline.stderr
            assert not _guest_rules(bed, "vif1.0"), "the rules go even so"
        finally:
            subprocess.run(["umount", bed.state_dir], check=True)
    finally:
        os.chmod(bed.state_dir, 0o755)
    # the record could not go: status says so rather than 'protected'
    status = bed.host_rules("status", check=False)
    assert status.returncode == 3 and "vif1.0" in status.stdout
    bed.hook("offline", "vif1.0")
    assert bed.host_rules("status").returncode == 0


def test_arptables_flushed_or_garbled_dumps_are_seen(legacy_bed, faults):
    bed = legacy_bed
    bed.protect_all()
    bed.run("h", ["arptables-legacy", "-F", "VR-FORWARD"])
    status = bed.host_rules("status", check=False)
    assert status.returncode == 3 and "VR-FORWARD lacks" in status.stdout
    bed.host_rules("start")
    assert bed.host_rules("status").returncode == 0
    before = bed.ruleset()
    faults.set("iptables-legacy-save", "garbage")
    result = bed.host_rules("start", check=False)
    assert result.returncode == 5 and "not a iptables dump" in result.stderr
    faults.clear()
    assert bed.ruleset() == before, "no jump doubled, nothing lost"
