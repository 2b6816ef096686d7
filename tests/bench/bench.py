#!/usr/bin/env python3
"""vif-rules benchmark against the per-rule approach of the 2010 script.

    bench.py [--quick] [--backends legacy,nft] [--reps N] [--out FILE] [--md FILE]

Run as root (./build.sh bench). Everything happens in network namespaces
this script creates and always deletes; the root namespace's firewall is
never touched. For each iptables backend it measures:
  1. one 'online' event (the whole hook process) with 0/100/500/1000 VIFs
     already protected, ours and the baseline, interleaved;
  2. re-protecting the whole host after a flush (host_rules.py start against
     the baseline hook run for every VIF) for 200 and 1000 VIFs;
  3. processes started per event and per re-protection (strace -f execve);
  4. peak memory of the hook process;
  5. TCP throughput and small-UDP packet rate guest -> uplink through the
     bridge with 1 and with 1000 VIFs' rules installed.
It prints PASS/MISS per target of issue 4 and exits 0 either way (a
benchmark, not a test); it exits non-zero only if the benchmark itself fails.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # tests/, for netbed's shebang_flags

import nsutil  # noqa: E402
import ovs_bench  # noqa: E402
import workload  # noqa: E402
from netbed import shebang_flags  # noqa: E402
from workload import MEASURED_DOMID, MEASURED_VIF  # noqa: E402

HOOK = os.path.join(TOP, "xapi-plugin", "vif_rules.py")
HOST_RULES = os.path.join(TOP, "host-rules", "host_rules.py")
BASELINE_HOOK = os.path.join(HERE, "baseline_hook.py")
BASELINE_SYNC = os.path.join(HERE, "baseline_sync.py")
PROBE_RUN = os.path.join(HERE, "memprobe", "probe_run.py")
# Both hooks run under the host's own interpreter, as a dom0 runs its hook
# (not a venv or a pyenv build that may load extra site packages at start).
DEFAULT_PYTHON = os.path.exists("/usr/bin/python3") and "/usr/bin/python3" or sys.executable
PYTHON = DEFAULT_PYTHON

BACKENDS = {
    "legacy": {"IPTABLES": "iptables-legacy", "IP6TABLES": "ip6tables-legacy"},
    "nft": {"IPTABLES": "iptables-nft", "IP6TABLES": "ip6tables-nft"},
}
COMMON_TOOLS = {"EBTABLES": "ebtables-nft", "ARPTABLES": "arptables-legacy"}

BRIDGE, UPLINK_PORT = "xenbr0", "eth1"
GUEST_IP, UPLINK_IP = workload.MEASURED_IPS[0], "192.0.2.254"
GUEST_MAC, UPLINK_MAC = workload.mac_for(MEASURED_DOMID), "02:00:00:00:00:fe"

FULL = {"event_counts": [0, 100, 500, 1000], "reps": 7, "reprotect_counts": [200, 1000],
        "reprotect_reps": 3, "fwd_vifs": 1000, "fwd_seconds": 3, "fwd_reps": 5,
        "baseline_reprotect_measured": [200, 1000]}
QUICK = {"event_counts": [0, 100], "reps": 1, "reprotect_counts": [20, 100],
         "reprotect_reps": 1, "fwd_vifs": 100, "fwd_seconds": 1, "fwd_reps": 1,
         "baseline_reprotect_measured": [20]}


def log(message):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), message))
    sys.stderr.flush()


def stats(samples):
    samples = sorted(samples)
    result = {"n": len(samples), "median": statistics.median(samples),
              "min": samples[0], "max": samples[-1], "samples": samples}
    if len(samples) >= 2:
        q = statistics.quantiles(samples, n=4, method="inclusive")
        result["q1"], result["q3"] = q[0], q[2]
    else:
        result["q1"] = result["q3"] = samples[0]
    return result


def family_of(path):
    name = os.path.basename(path)
    for family in ("ebtables", "ip6tables", "arptables", "iptables"):
        if family in name:
            return family
    return "other"


# ------------------------------------------------------------------ a host

class Host(object):
    """One 'dom0' namespace with its config file and state dir."""

    def __init__(self, prefix, label, workdir, backend, ports=False):
        self.ns = nsutil.create("%s-%s" % (prefix, label))
        self.dir = os.path.join(workdir, "%s-%s" % (prefix, label))
        os.makedirs(self.dir)
        self.backend = backend
        self.state_dir = os.path.join(self.dir, "state")
        self.pycache = os.path.join(workdir, "pycache")
        self.conf = os.path.join(self.dir, "vif-rules.conf")
        self.tools = dict(BACKENDS[backend])
        self.tools.update(COMMON_TOOLS)
        values = dict(self.tools)
        values.update({"TRUSTED_INTERFACES": UPLINK_PORT,
                       "LOCK_FILE": os.path.join(self.dir, "lock"),
                       "STATE_DIR": self.state_dir})
        with open(self.conf, "w") as handle:
            for key in sorted(values):
                handle.write('%s="%s"\n' % (key, values[key]))

    def env(self, **extra):
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        # As on a dom0 after the first run (Python writes the bytecode of the
        # installed modules): compiled once, into our work dir, not the tree.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = self.pycache
        env["VIF_RULES_CONF"] = self.conf
        env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
        env.update(extra)
        return env

    def run(self, argv, timeout=300, env=None, input_text=None):
        return nsutil.run(self.ns, argv, env=env or self.env(), timeout=timeout,
                          input_text=input_text)

    def script_argv(self, script, action, domid, probe=False):
        """A hook (ours or the baseline's) run as its '#!' line says; probe:
        through the peak-memory probe. The baseline needs --network even to
        take a VIF down (the 2010 script looked the addresses up again)."""
        argv = [PYTHON] + shebang_flags(script) + (probe and [PROBE_RUN] or []) + [
            script, action, workload.vif_name(domid)]
        if action == "online" or script == BASELINE_HOOK:
            argv += ["--network", workload.network_json(domid)]
        return argv

    # ours
    def hook(self, action, domid, env=None, probe=False):
        return self.run(self.script_argv(HOOK, action, domid, probe), timeout=120,
                        env=env).check()

    def host_rules(self, action="start", timeout=600):
        return self.run([PYTHON, HOST_RULES, action], timeout=timeout).check()

    def populate_ours(self, domids):
        workload.write_state(self.state_dir, domids)
        return self.host_rules("start")

    # the baseline
    def baseline(self, action, domid, env=None, probe=False):
        return self.run(self.script_argv(BASELINE_HOOK, action, domid, probe), timeout=120,
                        env=env).check()

    def populate_baseline(self, domids, arptables=True):
        ipt, ebt, arp = workload.baseline_restore_inputs(domids)
        self.run([self.tools["IPTABLES"] + "-restore", "--noflush"], input_text=ipt).check()
        self.run(["ebtables-nft-restore", "--noflush"], input_text=ebt).check()
        if arptables:  # no batch tool for arptables-legacy: one process per rule
            for tail in arp:
                self.run([self.tools["ARPTABLES"]] + tail, timeout=30).check()

    def flush(self):
        """What a reboot or 'iptables -F' leaves: empty tables, ACCEPT policies."""
        t = self.tools
        for tool in (t["IPTABLES"], t["IP6TABLES"]):
            for args in (["-P", "FORWARD", "ACCEPT"], ["-F"], ["-X"]):
                self.run([tool] + args, timeout=60).check()
        for table in ("filter", "nat"):
            for args in (["-F"], ["-X"]):
                self.run([t["EBTABLES"], "-t", table] + args, timeout=60).check()
        self.run([t["EBTABLES"], "-P", "FORWARD", "ACCEPT"], timeout=60).check()
        for args in (["-P", "FORWARD", "ACCEPT"], ["-F"], ["-X"]):
            self.run([t["ARPTABLES"]] + args, timeout=60).check()

    def count_processes(self, argv, timeout=600):
        """Processes argv starts (successful execve, the first one excluded), by family."""
        trace = os.path.join(self.dir, "strace.%d" % time.time_ns())
        self.run(["strace", "-f", "-qq", "-e", "trace=execve", "-e", "signal=none",
                  "-o", trace] + list(argv), timeout=timeout).check()
        pending = {}
        paths = []
        with open(trace) as handle:
            for line in handle:
                match = re.match(r"^(\d+)\s+(.*)$", line.strip())
                if not match:
                    continue
                pid, rest = match.groups()
                if rest.startswith("execve("):
                    path = rest.split('"')[1]
                    if rest.endswith("<unfinished ...>"):
                        pending[pid] = path
                    elif rest.rstrip().endswith("= 0"):
                        paths.append(path)
                elif rest.startswith("<... execve resumed>"):
                    if rest.rstrip().endswith("= 0") and pid in pending:
                        paths.append(pending[pid])
                    pending.pop(pid, None)
        os.unlink(trace)
        paths = paths[1:]  # the command itself
        counts = {"total": len(paths)}
        for path in paths:
            family = family_of(path)
            counts[family] = counts.get(family, 0) + 1
        return counts

    def memory(self, argv_fn):
        """(own peak kB of the Python process, peak kB of it and its children)."""
        out = os.path.join(self.dir, "mem.%d" % time.time_ns())
        env = self.env(VR_MEMPROBE_OUT=out)
        result = argv_fn(env)
        own = None
        with open(out) as handle:
            for line in handle:
                pid, kb = line.split()
                own = int(kb)  # one line: only the hook is Python
        os.unlink(out)
        return own, result.rusage.ru_maxrss


# ------------------------------------------------------------------ 1, 3, 4: events

def bench_events(prefix, workdir, backend, cfg, result):
    ours = Host(prefix, "eo", workdir, backend)
    base = Host(prefix, "eb", workdir, backend)
    ours.host_rules("start")
    base.run([PYTHON, "-c", "pass"]).check()
    events = result.setdefault("event", {})
    have = 0
    for count in cfg["event_counts"]:
        domids = workload.resident_domids(count)
        log("%s: populating %d resident VIFs (ours: state files + one host_rules start)"
            % (backend, count))
        populate = ours.populate_ours(domids)
        start = time.perf_counter()
        base.populate_baseline(domids[have:])
        base_populate = time.perf_counter() - start
        have = count
        log("%s: populated (ours %.2fs, baseline by restore %.2fs); timing %d reps"
            % (backend, populate.seconds, base_populate, cfg["reps"]))
        ours.hook("online", MEASURED_DOMID)  # warm-up, untimed
        ours.hook("offline", MEASURED_DOMID)
        base.baseline("online", MEASURED_DOMID)
        base.baseline("offline", MEASURED_DOMID)
        samples = {"ours": [], "baseline": [], "ours_offline": [], "baseline_offline": []}
        for _ in range(cfg["reps"]):
            samples["ours"].append(ours.hook("online", MEASURED_DOMID).seconds)
            samples["ours_offline"].append(ours.hook("offline", MEASURED_DOMID).seconds)
            samples["baseline"].append(base.baseline("online", MEASURED_DOMID).seconds)
            samples["baseline_offline"].append(
                base.baseline("offline", MEASURED_DOMID).seconds)
        if count == cfg["event_counts"][0]:
            cold = ours.env(PYTHONDONTWRITEBYTECODE="1")
            cold.pop("PYTHONPYCACHEPREFIX")
            samples["ours_no_bytecode"] = []
            for _ in range(cfg["reps"]):
                samples["ours_no_bytecode"].append(
                    ours.hook("online", MEASURED_DOMID, env=cold).seconds)
                ours.hook("offline", MEASURED_DOMID)
        entry = dict((k, stats(v)) for k, v in samples.items())
        entry["ratio"] = entry["ours"]["median"] / entry["baseline"]["median"]
        entry["populate_ours_seconds"] = populate.seconds
        events[str(count)] = entry
        log("%s: %d resident: ours %.1f ms, baseline %.1f ms (x%.2f)" % (
            backend, count, 1000 * entry["ours"]["median"],
            1000 * entry["baseline"]["median"], entry["ratio"]))
    # processes and memory at the largest resident count
    count = cfg["event_counts"][-1]
    procs = result.setdefault("processes", {})
    procs["event_ours"] = ours.count_processes(
        ours.script_argv(HOOK, "online", MEASURED_DOMID))
    # counted right after the counted online, so it really removes a VIF
    procs["event_ours_offline"] = ours.count_processes(
        ours.script_argv(HOOK, "offline", MEASURED_DOMID))
    procs["event_baseline"] = base.count_processes(
        base.script_argv(BASELINE_HOOK, "online", MEASURED_DOMID))
    base.baseline("offline", MEASURED_DOMID)
    procs["event_resident_vifs"] = count
    memory = result.setdefault("memory", {"resident_vifs": count, "ours": [], "baseline": []})
    for _ in range(3):
        own, tree = ours.memory(
            lambda env: ours.hook("online", MEASURED_DOMID, env=env, probe=True))
        ours.hook("offline", MEASURED_DOMID)
        memory["ours"].append({"own_peak_kb": own, "with_children_peak_kb": tree})
        own, tree = base.memory(
            lambda env: base.baseline("online", MEASURED_DOMID, env=env, probe=True))
        base.baseline("offline", MEASURED_DOMID)
        memory["baseline"].append({"own_peak_kb": own, "with_children_peak_kb": tree})
    memory["ours_own_peak_kb_max"] = max(m["own_peak_kb"] for m in memory["ours"])
    memory["ours_with_children_peak_kb_max"] = max(
        m["with_children_peak_kb"] for m in memory["ours"])
    nsutil.delete(ours.ns)
    nsutil.delete(base.ns)


# ------------------------------------------------------------------ 2, 3: re-protection

def bench_reprotect(prefix, workdir, backend, cfg, result):
    reprotect = result.setdefault("reprotect", {})
    procs = result.setdefault("processes", {})
    measured_per_vif = None
    for count in cfg["reprotect_counts"]:
        domids = workload.resident_domids(count)
        ours = Host(prefix, "ro%d" % count, workdir, backend)
        base = Host(prefix, "rb%d" % count, workdir, backend)
        try:
            ours.populate_ours(domids)
            samples = []
            for _ in range(cfg["reprotect_reps"]):
                ours.flush()
                samples.append(ours.host_rules("start").seconds)
            entry = {"ours": stats(samples)}
            if count == cfg["reprotect_counts"][0]:
                ours.flush()
                procs["reprotect_ours"] = ours.count_processes([PYTHON, HOST_RULES, "start"])
                procs["reprotect_vifs"] = count
            listing = os.path.join(base.dir, "vifs.json")
            with open(listing, "w") as handle:
                json.dump([[workload.vif_name(d), workload.network_json(d)] for d in domids],
                          handle)
            if count in cfg["baseline_reprotect_measured"]:
                log("%s: baseline re-protection of %d VIFs (%d processes)..." % (
                    backend, count, 12 * count))
                base.flush()
                run = base.run([PYTHON, BASELINE_SYNC, listing], timeout=1800).check()
                entry["baseline"] = {"median": run.seconds, "n": 1, "min": run.seconds,
                                     "max": run.seconds}
                entry["baseline_extrapolated"] = False
                measured_per_vif = run.seconds / count
                if "reprotect_baseline" not in procs:
                    base.flush()
                    procs["reprotect_baseline"] = base.count_processes(
                        [PYTHON, BASELINE_SYNC, listing], timeout=1800)
                    procs["reprotect_baseline_vifs"] = count
            else:
                estimate = measured_per_vif * count
                entry["baseline"] = {"median": estimate, "n": 0}
                entry["baseline_extrapolated"] = True
                entry["baseline_note"] = (
                    "extrapolated linearly from %d VIFs; a per-rule update costs more as "
                    "the chains grow, so the real figure is higher" %
                    cfg["baseline_reprotect_measured"][-1])
            entry["ratio"] = entry["ours"]["median"] / entry["baseline"]["median"]
            reprotect[str(count)] = entry
            log("%s: re-protect %d: ours %.2fs, baseline %s%.1fs (x%.3f)" % (
                backend, count, entry["ours"]["median"],
                entry["baseline_extrapolated"] and "~" or "", entry["baseline"]["median"],
                entry["ratio"]))
        finally:
            nsutil.delete(ours.ns)
            nsutil.delete(base.ns)


# ------------------------------------------------------------------ 5: forwarding

class ForwardBed(object):
    """host (bridge, vif999.0, eth1), guest and uplink namespaces."""

    def __init__(self, prefix, workdir, backend):
        self.host = Host(prefix, "fh", workdir, backend)
        self.guest = nsutil.create("%s-fg" % prefix)
        self.uplink = nsutil.create("%s-fu" % prefix)
        h = self.host
        h.run(["ip", "link", "add", BRIDGE, "type", "bridge", "stp_state", "0",
               "forward_delay", "0"]).check()
        h.run(["ip", "link", "set", BRIDGE, "up"]).check()
        self._plug(MEASURED_VIF, self.guest, GUEST_MAC, GUEST_IP)
        self._plug(UPLINK_PORT, self.uplink, UPLINK_MAC, UPLINK_IP)

    def _plug(self, port, ns, mac, ip):
        h = self.host
        h.run(["ip", "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", ns]).check()
        h.run(["ip", "link", "set", port, "master", BRIDGE, "up"]).check()
        for argv in (["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
                     ["ip", "link", "set", "eth0", "address", mac, "up"],
                     ["ip", "addr", "add", ip + "/24", "dev", "eth0"]):
            nsutil.run(ns, argv).check()

    def set_ours(self, others):
        """Our rules for the measured guest plus others (resident domids)."""
        h = self.host
        workload.clear_state(h.state_dir)
        workload.write_state(h.state_dir, list(others) + [MEASURED_DOMID])
        h.host_rules("start")

    def set_baseline(self, others):
        h = self.host
        h.host_rules("stop")
        workload.clear_state(h.state_dir)
        h.flush()
        h.populate_baseline(others, arptables=False)
        h.baseline("online", MEASURED_DOMID)

    def reachable(self):
        return nsutil.run(self.guest, ["ping", "-c", "2", "-i", "0.2", "-W", "1", UPLINK_IP],
                          timeout=15).returncode == 0

    def iperf(self, udp, seconds):
        # client and server on different CPUs, the same ones every time
        client = ["iperf3", "-c", UPLINK_IP, "-t", str(seconds), "-J", "-A", "0"]
        if udp:
            client += ["-u", "-l", "64", "-b", "0"]
        for attempt in range(5):
            server = nsutil.popen(self.uplink, ["iperf3", "-s", "-1", "-B", UPLINK_IP, "-A",
                                                  str(min(1, (os.cpu_count() or 1) - 1))])
            try:
                time.sleep(0.3)
                run = nsutil.run(self.guest, client, timeout=seconds + 30)
                if run.returncode == 0:
                    data = json.loads(run.stdout)
                    break
            finally:
                if server.poll() is None:
                    server.kill()
                server.communicate(timeout=10)
            time.sleep(0.5)
        else:
            raise RuntimeError("iperf3 failed: %s %s" % (run.stdout[-500:], run.stderr[-500:]))
        end = data["end"]
        if udp:
            total = end["sum"]
            received = total["packets"] - total["lost_packets"]
            return {"pps": received / total["seconds"],
                    "sent_pps": total["packets"] / total["seconds"],
                    "lost_percent": total.get("lost_percent")}
        return {"bps": end["sum_received"]["bits_per_second"]}


def bench_forwarding(prefix, workdir, backend, cfg, result):
    bed = ForwardBed(prefix, workdir, backend)
    others = workload.resident_domids(cfg["fwd_vifs"])
    configs = [("1", lambda: bed.set_ours([])),
               (str(cfg["fwd_vifs"]), lambda: bed.set_ours(others))]
    samples = {}
    try:
        for rep in range(cfg["fwd_reps"]):
            for label, setter in configs:
                setter()
                if not bed.reachable():
                    raise RuntimeError("guest cannot reach the uplink with %s VIFs" % label)
                tcp = bed.iperf(False, cfg["fwd_seconds"])
                udp = bed.iperf(True, cfg["fwd_seconds"])
                samples.setdefault(label, {"tcp_bps": [], "udp_pps": []})
                samples[label]["tcp_bps"].append(tcp["bps"])
                samples[label]["udp_pps"].append(udp["pps"])
                log("%s: forwarding, %s VIFs: TCP %.2f Gbit/s, UDP %.0f kpps" % (
                    backend, label, tcp["bps"] / 1e9, udp["pps"] / 1e3))
        bed.set_baseline(others)
        label = "baseline_%d" % cfg["fwd_vifs"]
        for rep in range(cfg["fwd_reps"]):
            if not bed.reachable():
                raise RuntimeError("guest cannot reach the uplink with the baseline rules")
            tcp = bed.iperf(False, cfg["fwd_seconds"])
            udp = bed.iperf(True, cfg["fwd_seconds"])
            samples.setdefault(label, {"tcp_bps": [], "udp_pps": []})
            samples[label]["tcp_bps"].append(tcp["bps"])
            samples[label]["udp_pps"].append(udp["pps"])
            log("%s: forwarding, baseline %d VIFs: TCP %.2f Gbit/s, UDP %.0f kpps" % (
                backend, cfg["fwd_vifs"], tcp["bps"] / 1e9, udp["pps"] / 1e3))
    finally:
        for ns in (bed.guest, bed.uplink, bed.host.ns):
            nsutil.delete(ns)
    fwd = {"vifs": cfg["fwd_vifs"], "seconds": cfg["fwd_seconds"], "guest": MEASURED_VIF}
    for label, values in samples.items():
        fwd[label] = dict((k, stats(v)) for k, v in values.items())
    many = str(cfg["fwd_vifs"])
    fwd["ratio_tcp"] = fwd[many]["tcp_bps"]["median"] / fwd["1"]["tcp_bps"]["median"]
    fwd["ratio_udp"] = fwd[many]["udp_pps"]["median"] / fwd["1"]["udp_pps"]["median"]
    fwd["baseline_ratio_tcp"] = (fwd[label]["tcp_bps"]["median"] /
                                 fwd["1"]["tcp_bps"]["median"])
    fwd["baseline_ratio_udp"] = (fwd[label]["udp_pps"]["median"] /
                                 fwd["1"]["udp_pps"]["median"])
    result["forwarding"] = fwd


# ------------------------------------------------------------------ targets

def check_targets(results, cfg):
    targets = []

    def add(name, backend, value, limit, ok, note=""):
        targets.append({"target": name, "backend": backend, "value": value, "limit": limit,
                        "pass": bool(ok), "note": note})

    for backend, r in results["backends"].items():
        ev = r.get("event", {})
        if ev:
            at = "500" if "500" in ev else str(max(int(k) for k in ev))
            ratio = ev[at]["ratio"]
            add("one event at %s resident: ours/baseline" % at, backend, round(ratio, 3),
                "<= 0.5", ratio <= 0.5, "" if at == "500" else "quick run: not 500")
            low, high = str(min(int(k) for k in ev)), str(max(int(k) for k in ev))
            growth = ev[high]["ours"]["median"] / ev[low]["ours"]["median"]
            add("one event growth %s->%s resident" % (low, high), backend, round(growth, 2),
                "<= 2 (nft)", growth <= 2 or backend != "nft",
                "target applies to nft only" if backend != "nft" else "")
        rp = r.get("reprotect", {})
        if rp:
            at = "1000" if "1000" in rp else str(max(int(k) for k in rp))
            ratio = rp[at]["ratio"]
            add("re-protect %s VIFs: ours/baseline" % at, backend, round(ratio, 4),
                "<= 0.05", ratio <= 0.05,
                rp[at].get("baseline_extrapolated") and "baseline extrapolated" or "")
        procs = r.get("processes", {})
        if "event_ours" in procs:
            worst = max([procs["event_ours"].get(f, 0)
                         for f in ("ebtables", "iptables", "ip6tables", "arptables")] +
                        [procs["event_ours_offline"].get(f, 0)
                         for f in ("ebtables", "iptables", "ip6tables", "arptables")])
            add("processes per family per event", backend, worst, "<= 1", worst <= 1,
                "online %s; offline %s" % (procs["event_ours"], procs["event_ours_offline"]))
        mem = r.get("memory")
        if mem:
            kb = mem["ours_own_peak_kb_max"]
            add("hook peak memory (MB)", backend, round(kb / 1024.0, 1), "<= 30",
                kb <= 30 * 1024, "with children: %.1f MB" % (
                    mem["ours_with_children_peak_kb_max"] / 1024.0))
        fwd = r.get("forwarding")
        if fwd:
            for key, label in (("ratio_tcp", "TCP throughput"), ("ratio_udp", "UDP packet rate")):
                add("forwarding %s, %d VIFs / 1 VIF" % (label, fwd["vifs"]), backend,
                    round(fwd[key], 3), ">= 0.8", fwd[key] >= 0.8)
    return targets


# ------------------------------------------------------------------ report

def ms(entry):
    return "%.1f [%.1f-%.1f]" % (1000 * entry["median"], 1000 * entry["min"],
                                 1000 * entry["max"])


def procs_text(counts):
    if not counts:
        return "-"
    parts = ["%s %d" % (f, counts[f]) for f in ("ebtables", "iptables", "ip6tables",
                                                 "arptables", "other") if counts.get(f)]
    return "%d (%s)" % (counts["total"], ", ".join(parts))


def markdown(results):
    m = results["machine"]
    lines = ["# vif-rules benchmark results", "",
             "Produced by `./build.sh bench` (`tests/bench/bench.py`%s) on %s, core at "
             "commit %s." % (results["quick"] and " --quick" or "", results["date"],
                            results.get("commit", "unknown")),
             "Machine: %d cores, kernel %s, Python %s; ebtables-nft, arptables-legacy; "
             "namespace bridge with real netfilter." % (m["cores"], m["kernel"], m["python"]),
             "Baseline: `tests/bench/baseline_hook.py`, the 2010 per-rule approach "
             "(one iptables/ebtables/arptables process per rule, built-in FORWARD chains).",
             "Both hooks run under that interpreter as their '#!' line says (ours "
             "`python -S`: no site-packages at start; the baseline: plain `python`).",
             "Times are wall times of whole processes, median [min-max] over %d runs; "
             "ratio = ours / baseline (lower is better)." % results["config"]["reps"], ""]
    for backend, r in results["backends"].items():
        lines += ["## iptables backend: %s" % backend, ""]
        ev = r.get("event", {})
        if ev:
            lines += ["### One `online` event of %s (2 IPv4), by VIFs already protected"
                      % MEASURED_VIF, "",
                      "| resident VIFs | ours (ms) | baseline (ms) | ours/baseline |"
                      " ours `offline` (ms) |",
                      "|---:|---:|---:|---:|---:|"]
            for count in sorted(ev, key=int):
                e = ev[count]
                lines.append("| %s | %s | %s | %.2f | %s |" % (
                    count, ms(e["ours"]), ms(e["baseline"]), e["ratio"],
                    ms(e["ours_offline"])))
            low, high = min(ev, key=int), max(ev, key=int)
            if "ours_no_bytecode" in ev[low]:
                lines += ["", "Bytecode: the hook runs with its compiled modules cached, as on "
                          "a dom0 after the first run; without the cache "
                          "(PYTHONDONTWRITEBYTECODE=1) one event at %s resident takes %s ms."
                          % (low, ms(ev[low]["ours_no_bytecode"]))]
            lines += ["", "Growth of ours from %s to %s resident VIFs: x%.2f; baseline: x%.2f."
                      % (low, high, ev[high]["ours"]["median"] / ev[low]["ours"]["median"],
                         ev[high]["baseline"]["median"] / ev[low]["baseline"]["median"]), ""]
        rp = r.get("reprotect", {})
        if rp:
            lines += ["### Re-protecting the whole host after a flush", "",
                      "| VIFs | ours: `host_rules.py start` (s) | baseline: hook per VIF (s) |"
                      " ours/baseline |", "|---:|---:|---:|---:|"]
            for count in sorted(rp, key=int):
                e = rp[count]
                base = ("~%.1f (extrapolated)" % e["baseline"]["median"]
                        if e.get("baseline_extrapolated") else "%.2f" % e["baseline"]["median"])
                lines.append("| %s | %.2f [%.2f-%.2f] | %s | %.4f (1/%.0f) |" % (
                    count, e["ours"]["median"], e["ours"]["min"], e["ours"]["max"], base,
                    e["ratio"], 1 / e["ratio"]))
            notes = [e["baseline_note"] for e in rp.values() if e.get("baseline_note")]
            lines += [""] + (["Note: baseline " + notes[0] + ".", ""] if notes else [])
        p = r.get("processes", {})
        if p:
            lines += ["### Processes started (strace -f, successful execve)", "",
                      "| operation | ours | baseline |", "|---|---|---|",
                      "| one `online` event (%d resident) | %s | %s |" % (
                          p["event_resident_vifs"], procs_text(p.get("event_ours")),
                          procs_text(p.get("event_baseline"))),
                      "| one `offline` event | %s | - |" % procs_text(p.get("event_ours_offline"))]
            if "reprotect_ours" in p:
                lines.append("| re-protection, %d VIFs | %s | %s |" % (
                    p["reprotect_vifs"], procs_text(p["reprotect_ours"]),
                    procs_text(p.get("reprotect_baseline"))))
            lines.append("")
        mem = r.get("memory")
        if mem:
            o = mem["ours"]
            b = mem["baseline"]
            lines += ["### Peak memory of the hook process (%d resident VIFs)" %
                      mem["resident_vifs"], "",
                      "| | own peak RSS (MB) | with its children (MB) |", "|---|---:|---:|",
                      "| ours | %.1f | %.1f |" % (max(x["own_peak_kb"] for x in o) / 1024.0,
                                                 max(x["with_children_peak_kb"] for x in o) / 1024.0),
                      "| baseline | %.1f | %.1f |" % (
                          max(x["own_peak_kb"] for x in b) / 1024.0,
                          max(x["with_children_peak_kb"] for x in b) / 1024.0), ""]
        fwd = r.get("forwarding")
        if fwd:
            many = str(fwd["vifs"])
            bl = "baseline_%s" % many
            lines += ["### Forwarding %s -> uplink through the bridge (iperf3, %ds, median "
                      "of %d)" % (fwd["guest"], fwd["seconds"], fwd["1"]["tcp_bps"]["n"]), "",
                      "| rules installed | TCP (Gbit/s) | UDP 64-byte (kpps received) |",
                      "|---|---:|---:|"]
            for label, name in (("1", "ours, 1 VIF"), (many, "ours, %s VIFs" % many),
                                (bl, "baseline, %s VIFs (info)" % many)):
                f = fwd[label]
                lines.append("| %s | %.2f [%.2f-%.2f] | %.0f [%.0f-%.0f] |" % (
                    name, f["tcp_bps"]["median"] / 1e9, f["tcp_bps"]["min"] / 1e9,
                    f["tcp_bps"]["max"] / 1e9, f["udp_pps"]["median"] / 1e3,
                    f["udp_pps"]["min"] / 1e3, f["udp_pps"]["max"] / 1e3))
            lines += ["", "Ours with %s VIFs / 1 VIF: TCP x%.2f, UDP x%.2f. Baseline's linear "
                      "FORWARD lists with %s VIFs / ours with 1 VIF: TCP x%.2f, UDP x%.2f." % (
                          many, fwd["ratio_tcp"], fwd["ratio_udp"], many,
                          fwd["baseline_ratio_tcp"], fwd["baseline_ratio_udp"]), ""]
    lines += ["## How it was measured", "",
              "- The measured guest is %s (2 IPv4): the last sibling at every level of the "
              "dispatch trie (vif -> vif9 -> vif99 -> vif999), the worst case for a "
              "frame's walk and an event's trie path." % MEASURED_VIF,
              "- Resident VIFs: domids 1..N (skipping %d), 2 IPv4 each. Ours are put in place "
              "by writing their state files and one `host_rules.py start`; the baseline's by "
              "`iptables-restore`/`ebtables-restore --noflush` of the rules its hook would "
              "have added, plus one `arptables-legacy` process per ARP rule (arptables has "
              "no incremental batch tool)." % MEASURED_DOMID,
              "- One event: a warm-up, then per repetition ours `online` (timed), ours "
              "`offline` (timed, shown), baseline `online` (timed), baseline `offline`; "
              "every process is started directly in the bed's namespace (setns before "
              "exec) and timed from fork to wait4.",
              "- Re-protection: after a flush of every table of the namespace (`-P FORWARD "
              "ACCEPT`, `-F`, `-X`, ebtables filter and nat, arptables), ours is one "
              "`host_rules.py start`, the baseline is one Python process running the "
              "baseline hook for every VIF (`tests/bench/baseline_sync.py`).",
              "- Processes: `strace -f -e trace=execve`, successful calls, the command "
              "itself not counted; 'other' is Python (the baseline's hook per VIF).",
              "- Memory: own peak = VmHWM of the hook's Python process at exit (the hook "
              "run through `memprobe/probe_run.py` in those runs only); with children = "
              "`wait4()` ru_maxrss, the largest of the hook and the tools it ran.",
              "- Forwarding: a bridge with only the measured guest's port and a trusted "
              "uplink `eth1`; iperf3 client in the guest pinned to CPU 0, server on the "
              "uplink pinned to CPU 1; UDP is `-u -l 64 -b 0`, received packets per second. "
              "Configurations alternate per repetition. The baseline row has its "
              "iptables/ebtables rules for every VIF, not its arptables rules (not on the "
              "data path). The machine is shared: forwarding figures are noisy.",
              ""]
    lines += ["## Targets of issue 4", "", "| target | backend | figure | limit | result |",
              "|---|---|---:|---|---|"]
    for t in results["targets"]:
        lines.append("| %s%s | %s | %s | %s | %s |" % (
            t["target"], t["note"] and " (%s)" % t["note"] or "", t["backend"], t["value"],
            t["limit"], t["pass"] and "PASS" or "**MISS**"))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ main

def python_version(python):
    out = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                         capture_output=True, text=True, timeout=60).stdout.strip()
    return "%s (%s)" % (out or "?", python)


def tree_commit(tree):
    """The commit the measured core comes from, '+modified' if it differs."""
    try:
        head = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", tree, "status", "--porcelain", "--",
                                "xapi-plugin", "host-rules"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + (dirty and "+modified" or "")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small counts, 1 repetition (smoke test)")
    parser.add_argument("--backends", default="legacy,nft")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--sections",
                        help="default: events,reprotect,forwarding,ovs,storm (--quick: without "
                             "ovs and storm); --storm first: only storm_bench.py's run")
    parser.add_argument("--baseline-reprotect-full", action="store_true",
                        help="measure the baseline's re-protection of every size "
                             "instead of extrapolating the largest from the smallest")
    parser.add_argument("--tree", default=TOP,
                        help="benchmark the hook and host-rules of another checkout "
                             "(e.g. a candidate fix); default: this one")
    parser.add_argument("--python", default=DEFAULT_PYTHON,
                        help="interpreter of both hooks (default: %(default)s)")
    parser.add_argument("--out", default=os.path.join(TOP, "out", "bench", "results.json"))
    parser.add_argument("--md", help="markdown table (default: tests/bench/RESULTS.md for a "
                                     "full run, none for --quick)")
    import storm_bench  # here, not above: it imports this module
    if argv[:1] == ["--storm"]:  # only the boot storms, with storm_bench.py's options
        return storm_bench.main(argv[1:])
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.stderr.write("bench.py: run as root (./build.sh bench)\n")
        return 2
    for tool in ("ip", "strace", "iperf3", "iptables-legacy", "iptables-nft",
                 "ebtables-nft", "arptables-legacy"):
        if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            sys.stderr.write("bench.py: %s is not installed\n" % tool)
            return 2
    global HOOK, HOST_RULES, PYTHON
    PYTHON = args.python
    HOOK = os.path.join(os.path.abspath(args.tree), "xapi-plugin", "vif_rules.py")
    HOST_RULES = os.path.join(os.path.abspath(args.tree), "host-rules", "host_rules.py")
    cfg = dict(QUICK if args.quick else FULL)
    if args.reps:
        cfg["reps"] = args.reps
    if args.baseline_reprotect_full:
        cfg["baseline_reprotect_measured"] = list(cfg["reprotect_counts"])
    sections = (args.sections or (args.quick and "events,reprotect,forwarding") or
                "events,reprotect,forwarding,ovs,storm").split(",")
    md_path = args.md or (None if args.quick else os.path.join(HERE, "RESULTS.md"))

    def terminate(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)

    results = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "commit": tree_commit(args.tree),
               "machine": {"cores": os.cpu_count(), "kernel": platform.release(),
                           "python": python_version(PYTHON)},
               "quick": args.quick, "config": cfg, "tree": os.path.abspath(args.tree),
               "backends": {}}
    workdir = tempfile.mkdtemp(prefix="vr-bench-")
    started = time.time()
    try:
        for index, backend in enumerate(args.backends.split(",")):
            prefix = "vrb%x%d" % (os.getpid() % 0xfff, index)
            r = results["backends"].setdefault(backend, {})
            if "events" in sections:
                bench_events(prefix, workdir, backend, cfg, r)
            if "reprotect" in sections:
                bench_reprotect(prefix, workdir, backend, cfg, r)
            if "forwarding" in sections:
                bench_forwarding(prefix, workdir, backend, cfg, r)
        if "ovs" in sections:
            results["ovs"] = ovs_bench.bench(workdir, cfg, PYTHON, HOOK, HOST_RULES, log)
        if "storm" in sections:
            results["storm"] = storm_bench.full_run(args.tree, os.path.join(workdir, "storm"),
                                                 args.quick)
    finally:
        nsutil.cleanup_all()
        shutil.rmtree(workdir, ignore_errors=True)
    results["seconds"] = time.time() - started
    results["targets"] = check_targets(results, cfg) + ovs_bench.targets(results.get("ovs"))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=1, sort_keys=True)
    text = markdown(results) + ovs_bench.markdown(results.get("ovs"))
    if "storm" in results:
        text += "\n" + storm_bench.markdown(results["storm"])
    if md_path:
        with open(md_path, "w") as handle:
            handle.write(text)
    print(text)
    print("Targets:")
    for t in results["targets"]:
        print("  %-4s %-45s %-6s %s (limit %s)%s" % (
            t["pass"] and "PASS" or "MISS", t["target"], t["backend"], t["value"],
            t["limit"], t["note"] and "  [%s]" % t["note"] or ""))
    if "storm" in results:
        storm_bench.report_targets(results["storm"]["targets"])
    print("results: %s%s (%.0f s)" % (args.out, md_path and ", " + md_path or "",
                                      results["seconds"]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.stderr.write("bench.py: interrupted; namespaces removed\n")
        sys.exit(130)
