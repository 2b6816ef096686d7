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
