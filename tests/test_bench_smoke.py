"""Smoke test of the benchmark: 'bench.py --quick' runs and writes well-formed
JSON with every section. Not a timed test: no speed is asserted here."""

import json
import os
import signal
import subprocess
import sys

import pytest

import netbed

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(TOP, "tests", "bench", "bench.py")
TIME_BOUND = 240
FAMILIES = ("ebtables", "iptables", "ip6tables")


def _unavailable():
    if os.geteuid() != 0:
        return "the benchmark needs root (network namespaces, netfilter)"
    reason = netbed.available()
    if reason:
        return reason
    for tool in ("strace", "iperf3"):
        if not any(os.access(os.path.join(d, tool), os.X_OK)
                   for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin")):
            return "%s is not installed (./build.sh bench installs it)" % tool
    return None


def test_bench_quick_writes_every_section(tmp_path):
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "results.json"
    md = tmp_path / "RESULTS.md"
    process = subprocess.Popen([sys.executable, BENCH, "--quick", "--out", str(out),
                                "--md", str(md)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=TIME_BOUND)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # bench.py removes its namespaces on SIGTERM
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        pytest.fail("bench.py --quick took longer than %ds" % TIME_BOUND)
    assert process.returncode == 0, stderr[-3000:]
    assert "Targets:" in stdout
    results = json.loads(out.read_text())
    assert results["quick"] is True
    assert results["machine"]["cores"] >= 1
    assert set(results["backends"]) == {"legacy", "nft"}
    for backend, r in results["backends"].items():
        assert set(r) >= {"event", "reprotect", "processes", "memory", "forwarding"}, backend
        assert r["event"], backend
        for count, entry in r["event"].items():
            for side in ("ours", "baseline"):
                assert entry[side]["median"] > 0
                assert entry[side]["min"] <= entry[side]["median"] <= entry[side]["max"]
            assert entry["ratio"] > 0
        for count, entry in r["reprotect"].items():
            assert entry["ours"]["median"] > 0 and entry["baseline"]["median"] > 0
            assert isinstance(entry["baseline_extrapolated"], bool)
        p = r["processes"]
        for key in ("event_ours", "event_ours_offline", "event_baseline", "reprotect_ours",
                    "reprotect_baseline"):
            assert p[key]["total"] >= 1, key
        # the measured guest has IPv4 only: ip6tables holds no chains for it
        assert {"ebtables", "iptables"} <= set(p["event_ours"])
        assert all(p["event_ours"].get(f, 0) <= 1 for f in FAMILIES)
        assert r["memory"]["ours_own_peak_kb_max"] > 0
        fwd = r["forwarding"]
        for label in ("1", str(fwd["vifs"]), "baseline_%d" % fwd["vifs"]):
            assert fwd[label]["tcp_bps"]["median"] > 0
            assert fwd[label]["udp_pps"]["median"] > 0
        assert fwd["ratio_tcp"] > 0 and fwd["ratio_udp"] > 0
    names = [t["target"] for t in results["targets"]]
    assert len(names) == 7 * 2, names
    for t in results["targets"]:
        assert isinstance(t["pass"], bool)
    assert "## Targets of issue 4" in md.read_text()
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    prefix = "vrb%x" % (process.pid % 0xfff)
    assert prefix + "0-" not in leftover and prefix + "1-" not in leftover


STORM = os.path.join(TOP, "tests", "bench", "storm_bench.py")
STORM_BOUND = 120


def test_storm_quick_is_one_by_one_with_fewer_restores(tmp_path):
    """A tiny boot storm (12 VIFs, 4 hooks at a time, 4 resident) under each
    dom0 Python installed: the ruleset afterwards equals the same VIFs
    applied one by one, and fewer restores ran than events."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    pythons = [v for v, path in (("2.7", "/root/.pyenv/versions/2.7.18/bin/python"),
                                 ("3.6", "/root/.pyenv/versions/3.6.15/bin/python"))
               if os.path.exists(path)]
    if not pythons:
        pytest.skip("neither Python 2.7 nor 3.6 is installed under /root/.pyenv")
    out = tmp_path / "storm.json"
    process = subprocess.Popen([sys.executable, STORM, "--quick", "--parts", "count",
                                "--pythons", ",".join(pythons), "--out", str(out),
                                "--md", str(tmp_path / "RESULTS.md")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=STORM_BOUND)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # storm_bench.py removes its namespaces
        process.communicate(timeout=30)
        pytest.fail("storm_bench.py --quick took longer than %ds" % STORM_BOUND)
    assert process.returncode == 0, stderr[-3000:]
    results = json.loads(out.read_text())
    entry = results["backends"]["legacy"]["storm"]["12/4/4"]
    assert set(entry["pythons"]) == set(pythons)
    for version, e in entry["pythons"].items():
        count = e["count"]
        assert count["failures"] == 0, (version, stderr[-2000:])
        assert count["equal"], (version, count["differ"])
        assert count["events"] == 12
        for family in ("iptables", "ebtables"):
            assert 1 <= count["restores"].get(family, 0) < 12, (version, count["restores"])
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.count("<!-- storm:begin -->") == 1 and "<!-- storm:end -->" in text
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "vrs%x" % (process.pid % 0xfff) not in leftover


def test_ab_event_compares_two_trees(tmp_path):
    """tests/bench/ab_event.py (issue 11's A/B of one event) runs end to end:
    here both trees are this one, so it must print every figure."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(
        [sys.executable, os.path.join(TOP, "tests", "bench", "ab_event.py"), "--tree-a", TOP,
         "--resident", "5", "--reps", "1", "--reprotect", "5", "--reprotect-reps", "1"],
        capture_output=True, text=True, timeout=TIME_BOUND)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["online", "offline", "re-protect"]
    for line in lines[1:3]:
        assert "B/A" in line and "B/baseline" in line
