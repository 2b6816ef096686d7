"""Apply, replace, tear down, run in parallel, refuse bad input, fail closed."""

import json
import os
import stat
import subprocess
import sys

import pytest

import netbed

PYTHONS = {
    "2.7": "/root/.pyenv/versions/2.7.18/bin/python",
    "3.6": "/root/.pyenv/versions/3.6.15/bin/python",
    "newest": "/root/.pyenv/versions/3.13.0/bin/python",
}


def test_apply_twice_is_byte_identical(bed):
    bed.protect_all()
    first = bed.ruleset()
    g1 = bed.guests[0]
    bed.hook("online", g1.port, "--network", g1.network())
    bed.host_rules("start")
    assert bed.ruleset() == first


def test_teardown_cuts_the_guest_and_spares_the_others(bed):
    bed.protect_all()
    g1, g2 = bed.guests[0], bed.guests[1]
    assert bed.ping("g1", netbed.UPLINK_IP)
    others_before = _chains_mentioning(bed.ruleset(), g2.port)
    bed.hook("offline", g1.port)
    assert not bed.ping("g1", netbed.UPLINK_IP, count=1)
    assert not bed.ping("up", g1.ipv4[0], count=1)
    assert not bed.ping("g1", netbed.DOM0_IP, count=1)
    assert bed.ping("g2", netbed.UPLINK_IP)
    assert _chains_mentioning(bed.ruleset(), g2.port) == others_before
    assert g1.port not in bed.ruleset()
    # tearing down again, or a VIF never seen, is not an error
    bed.hook("offline", g1.port)
    bed.hook("offline", "vif77.3")


def _chains_mentioning(ruleset, text):
    return [line for line in ruleset.splitlines() if text in line]


def test_reused_domid_gets_only_the_new_addresses(bed):
    """Domain 1 dies without an offline event; a new domain 1 comes up with
    other addresses: the old rule set must not survive."""
    bed.protect_all()
    g1 = bed.guests[0]
    bed.hook("online", g1.port, "--network", g1.network(ipv4=["192.0.2.31"], ipv6=[]))
    bed.ip("g1", "addr", "flush", "dev", "eth0")
    bed.ip("g1", "addr", "add", "192.0.2.31/24", "dev", "eth0")
    assert bed.ping("g1", netbed.UPLINK_IP)
    bed.ip("g1", "addr", "flush", "dev", "eth0")
    bed.ip("g1", "addr", "add", g1.ipv4[0] + "/24", "dev", "eth0")
    assert not bed.ping("g1", netbed.UPLINK_IP, count=1), "the dead domain's address still works"
    replaced = bed.ruleset()
    assert "192.0.2.11" not in replaced
    # identical to what a fresh apply of the new addresses gives
    bed.hook("offline", g1.port)
    bed.hook("online", g1.port, "--network", g1.network(ipv4=["192.0.2.31"], ipv6=[]))
    assert bed.ruleset() == replaced


def test_parallel_applies_end_in_the_serial_ruleset(legacy_bed):
    bed = legacy_bed
    bed.host_rules("start")
    names = ["vif%d.%d" % (domid, domid % 2) for domid in range(10, 30)]
    networks = {}
    for i, name in enumerate(names):
        networks[name] = json.dumps({"mac": "02:00:00:01:00:%02x" % i, "ips": [
            {"ip": "198.51.100.%d" % (i + 1), "enabled": "1"},
            {"ip": "203.0.113.%d" % (i + 1), "enabled": "1"}]})
    processes = [subprocess.Popen(
        ["ip", "netns", "exec", bed.ns("h"), sys.executable] +
        netbed.shebang_flags(netbed.HOOK) + [netbed.HOOK, "online", name,
         "--network", networks[name]], env=bed.env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in names]
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    parallel = bed.ruleset()
    bed.host_rules("stop")
    for name in names:
        bed.hook("offline", name)
    bed.host_rules("start")
    assert "vif10.0" not in bed.ruleset()
    for name in names:
        bed.hook("online", name, "--network", networks[name])
    assert bed.ruleset() == parallel
    for name in names:
        assert "VRF-%s" % name in parallel


BAD_INVOCATIONS = [
    ("bad MAC", ["online", "vif1.0", "--network", '{"mac": "zz:00:00:00:00:01"}'], "mac"),
    ("multicast MAC", ["online", "vif1.0", "--network", '{"mac": "01:00:5e:00:00:01"}'], "mac"),
    ("bad IP", ["online", "vif1.0", "--network",
                '{"mac": "02:00:00:00:00:01", "ips": [{"ip": "300.1.1.1", "enabled": "1"}]}'],
     "300.1.1.1"),
    ("bad IPv6", ["online", "vif1.0", "--network",
                  '{"mac": "02:00:00:00:00:01", "ip6s": [{"ip": "2001:db8::g", "enabled": "1"}]}'],
     "2001:db8::g"),
    ("IP with an option", ["online", "vif1.0", "--network",
                           '{"mac": "02:00:00:00:00:01", "ips": [{"ip": "-j ACCEPT", "enabled": "1"}]}'],
     "must not begin with '-'"),
    ("shell in the name", ["online", "vif5.0; rm -rf /", "--network",
                           '{"mac": "02:00:00:00:00:01"}'], "vif<domid>"),
    ("not a guest port", ["online", "eth0", "--network", '{"mac": "02:00:00:00:00:01"}'],
     "vif<domid>"),
    ("leading zero domid", ["offline", "vif01.0"], "vif<domid>"),
    ("bad JSON", ["online", "vif1.0", "--network", '{"mac": '], "not valid JSON"),
    ("JSON not an object", ["online", "vif1.0", "--network", '["02:00:00:00:00:01"]'],
     "must be a JSON object"),
    ("missing MAC", ["online", "vif1.0", "--network", '{"ips": []}'], "missing"),
    ("unknown key", ["online", "vif1.0", "--network",
                     '{"mac": "02:00:00:00:00:01", "firewall": "off"}'], "unknown key"),
    ("argument beginning with -", ["online", "-vif1.0"], "unknown option"),
    ("missing VIF", ["online"], "expected ACTION VIF"),
    ("unknown action", ["flush", "vif1.0"], "expected online"),
    ("no data at all", ["online", "vif1.0"], "VIF_RULES_NO_NETWORK_DATA"),
]


@pytest.mark.parametrize("case", BAD_INVOCATIONS, ids=[c[0] for c in BAD_INVOCATIONS])
def test_bad_input_changes_nothing(legacy_bed, case):
    bed = legacy_bed
    bed.protect_all()
    before = bed.ruleset()
    state_before = sorted(os.listdir(bed.state_dir))
    result = bed.hook(*case[1], check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vif_rules: error: VIF_RULES_"), result.stderr
    assert case[2] in lines[0]
    assert bed.ruleset() == before
    assert sorted(os.listdir(bed.state_dir)) == state_before


def _wrap_tools(bed, tmp_path, fail=()):
    """Wrappers that log every netfilter process started, then run the real tool."""
    wrap = tmp_path / "wrap"
    wrap.mkdir()
    log = tmp_path / "processes.log"
    tools = dict(netbed.BACKENDS[bed.backend])
    tools.update({"EBTABLES": "ebtables-nft", "ARPTABLES": "arptables-legacy"})
    for command in list(tools.values()):
        for suffix in ("", "-restore", "-save"):
            name = command + suffix
            script = wrap / name
            body = "exit 1" if name in fail else 'exec %s "$@"' % name
            script.write_text("#!/bin/sh\necho %s >> %s\n%s\n" % (name, log, body))
            script.chmod(script.stat().st_mode | stat.S_IEXEC)
    bed.write_config(**dict((key, str(wrap / value)) for key, value in tools.items()))
    return log


def test_processes_per_event_do_not_grow_with_addresses(legacy_bed, tmp_path):
    bed = legacy_bed
    bed.host_rules("start")
    log = _wrap_tools(bed, tmp_path)
    counts = {}
    for n in (1, 16):
        network = json.dumps({"mac": "02:00:00:00:00:01",
                              "ips": [{"ip": "198.51.100.%d" % (i + 1), "enabled": "1"}
                                      for i in range(n)],
                              "ip6s": [{"ip": "2001:db8::%x" % (i + 1), "enabled": "1"}
                                       for i in range(n)]})
        if log.exists():
            log.unlink()
        bed.hook("online", "vif1.0", "--network", network)
        counts[n] = sorted(log.read_text().split())  # the families run at once
    assert counts[1] == counts[16]
    assert sorted(counts[1]) == sorted(["ebtables-nft-restore",
                                        netbed.BACKENDS["legacy"]["IPTABLES"] + "-restore",
                                        netbed.BACKENDS["legacy"]["IP6TABLES"] + "-restore"])
    families = ("ebtables-nft", netbed.BACKENDS["legacy"]["IPTABLES"],
                netbed.BACKENDS["legacy"]["IP6TABLES"])
    log.unlink()
    bed.hook("offline", "vif1.0")  # as recorded: one restore per family, no dump
    assert sorted(log.read_text().split()) == sorted([f + "-restore" for f in families])
    bed.hook("online", "vif1.0", "--network", network)
    with open(os.path.join(bed.state_dir, "vif1.0.json"), "w") as handle:
        handle.write("{")
    log.unlink()
    bed.hook("offline", "vif1.0")  # the record unreadable: by name, what the kernel holds
    assert sorted(log.read_text().split()) == sorted(
        [f + suffix for f in families for suffix in ("-save", "-restore")])
    assert "vif1.0" not in bed.ruleset()


def test_failure_halfway_fails_closed(legacy_bed, tmp_path):
    """ip6tables-restore breaks during an apply: the guest ends with no access."""
    bed = legacy_bed
    bed.protect_all()
    g1 = bed.guests[0]
    assert bed.ping("g1", netbed.UPLINK_IP)
    _wrap_tools(bed, tmp_path, fail=("ip6tables-legacy-restore",))
    result = bed.hook("online", g1.port, "--network", g1.network(ipv4=["192.0.2.41"]),
                      check=False)
    assert result.returncode != 0
    assert "VIF_RULES_COMMAND_FAILED" in result.stderr
    assert not bed.ping("g1", netbed.UPLINK_IP, count=1)
    bed.ip("g1", "addr", "add", "192.0.2.41/24", "dev", "eth0")
    assert not bed.ping("g1", netbed.UPLINK_IP, count=1)
    assert bed.ping("g2", netbed.UPLINK_IP), "other guests keep working"
    assert not os.path.exists(os.path.join(bed.state_dir, g1.port + ".json"))


@pytest.mark.parametrize("version", sorted(PYTHONS))
def test_hook_and_host_rules_run_under_each_dom0_python(legacy_bed, version):
    python = PYTHONS[version]
    if not os.path.exists(python):
        pytest.skip("%s is not installed at %s" % (version, python))
    bed = legacy_bed
    bed.host_rules("start", python=python)
    assert bed.host_rules("status", python=python).returncode == 0
    for guest in bed.guests:
        bed.hook("online", guest.port, "--network", guest.network(), python=python)
    assert bed.ping("g1", netbed.UPLINK_IP)
    assert bed.ping("g1", bed.guests[1].ipv4[0])
    bed.hook("offline", "vif1.0", python=python)
    assert not bed.ping("g1", netbed.UPLINK_IP, count=1)
    bad = bed.hook("online", "vif1.0", "--network", "{", python=python, check=False)
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr
    stop = bed.host_rules("stop", python=python)
    assert "OFF" in stop.stderr
    assert bed.host_rules("status", python=python, check=False).returncode == 3
