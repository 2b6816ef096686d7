#!/usr/bin/env python3
"""Boot storms (issue 12): N VIFs come online at once, K hooks at a time, on
a host already protecting R VIFs; ours against the 2010 per-rule script.

    storm_bench.py [--quick] [--backends legacy[,nft]] [--reps N]
                   [--pythons 2.7,3.6] [--parts storm,single,count,profile]
                   [--out FILE] [--md FILE]

Run as root. Per backend, per (N, K, R) and per interpreter (each script run
as its '#!' line says):
  storm    wall time from the first launch until the last hook exits, a pool
           of K workers launching hooks until N are done; ours and the
           baseline on fresh hosts, interleaved, repeated; after each run of
           ours every family's dump is compared with a host where the same
           VIFs were applied one by one by the hook (and the records too);
  count    a separate run of ours with every save/restore tool behind a
           wrapper that logs, then execs the real tool (the timed runs have
           no wrappers): restore and save processes per family;
  profile  a separate run through storm_probe.py: group sizes, how long the
           holder holds the lock and where that time goes, idle lock time;
  single   one 'online' at 500 resident VIFs, ours against the baseline,
           median of at least 9, per interpreter in one run.
It writes its own section of RESULTS.md (between the storm markers) and
exits 0 whether targets are met or not.
"""

import argparse
import ctypes
import datetime
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

import bench  # noqa: E402
import nsutil  # noqa: E402
import workload  # noqa: E402
from netbed import shebang_flags  # noqa: E402

BASELINE_HOOK = os.path.join(HERE, "baseline_hook.py")
PROBE = os.path.join(HERE, "storm_probe.py")
PYTHONS = {"2.7": "/root/.pyenv/versions/2.7.18/bin/python",
           "3.6": "/root/.pyenv/versions/3.6.15/bin/python"}
FULL = {"storms": [(200, 8, 200), (1000, 16, 0)], "reps": 3, "single_resident": 500,
        "single_reps": 11, "group": 8, "group_resident": [200, 500, 1000],
        "sides": ["ours", "baseline"]}
QUICK = {"storms": [(12, 4, 4)], "reps": 1, "single_resident": 20, "single_reps": 3,
         "group": 4, "group_resident": [20], "sides": ["ours", "baseline"]}
PARTS = ["storm", "count", "profile", "single", "groupcost"]
STORM_TARGET = 0.25
SINGLE_TARGET = 0.5
BEGIN, END = "<!-- storm:begin -->", "<!-- storm:end -->"
# The tools a storm of ours runs, by the config key that can name them.
WRAPPED = {"IPTABLES_RESTORE": ("iptables", "restore"), "IP6TABLES_RESTORE": ("ip6tables", "restore"),
           "EBTABLES_RESTORE": ("ebtables", "restore"), "IPTABLES_SAVE": ("iptables", "save"),
           "IP6TABLES_SAVE": ("ip6tables", "save"), "EBTABLES_SAVE": ("ebtables", "save")}
_libc = ctypes.CDLL(None, use_errno=True)

log = bench.log
stats = bench.stats


# ------------------------------------------------------------------ the tree

class Tree(object):
    """A copy of the hook and host-rules, taken once: edits made to the work
    tree during a run do not change what is measured, and Python 2.7 and
    3.6 write their bytecode into the copy (as on a dom0 after a first run)."""

    def __init__(self, source, workdir, name="tree"):
        self.label = name
        self.dir = os.path.join(workdir, name)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for part in ("xapi-plugin", "host-rules"):
            shutil.copytree(os.path.join(source, part), os.path.join(self.dir, part),
                            ignore=ignore)
        self.plugin = os.path.join(self.dir, "xapi-plugin")
        self.hook = os.path.join(self.plugin, "vif_rules.py")
        self.host_rules = os.path.join(self.dir, "host-rules", "host_rules.py")


def ours_argv(python, tree, action, domid, probe=False):
    script = probe and PROBE or tree.hook
    argv = [python] + shebang_flags(tree.hook) + [script, action, workload.vif_name(domid)]
    if action == "online":
        argv += ["--network", workload.network_json(domid)]
    return argv


def baseline_argv(python, action, domid):
    return [python] + shebang_flags(BASELINE_HOOK) + [
        BASELINE_HOOK, action, workload.vif_name(domid), "--network",
        workload.network_json(domid)]


class StormHost(bench.Host):
    def env(self, **extra):
        # The host's own xtables lock (iptables-legacy takes it around every
        # change), as a dom0 has one: other engineers' tests in other
        # namespaces of this machine take /run/xtables.lock.
        extra.setdefault("XTABLES_LOCKFILE", os.path.join(self.dir, "xtables.lock"))
        return bench.Host.env(self, **extra)

    def configure(self, **extra):
        """Rewrite the config file with extra keys (tool wrappers)."""
        values = dict(self.tools)
        values.update({"TRUSTED_INTERFACES": bench.UPLINK_PORT,
                       "LOCK_FILE": os.path.join(self.dir, "lock"),
                       "STATE_DIR": self.state_dir})
        values.update(extra)
        with open(self.conf, "w") as handle:
            for key in sorted(values):
                handle.write('%s="%s"\n' % (key, values[key]))

    def start_ours(self, python, tree, resident):
        workload.write_state(self.state_dir, resident)
        self.run([python, tree.host_rules, "start"], timeout=600).check()

    def dumps(self):
        """{family: dump} of every family we write, without counters or dates."""
        result = {}
        for family, argv in (("iptables", [self.tools["IPTABLES"] + "-save"]),
                             ("ip6tables", [self.tools["IP6TABLES"] + "-save"]),
                             ("ebtables", ["ebtables-nft-save"]),
                             ("arptables", [self.tools["ARPTABLES"], "-L", "-n"])):
            text = self.run(argv, timeout=120).check().stdout
            text = re.sub(r"\[\d+:\d+\]", "[0:0]", text)
            result[family] = "\n".join(line for line in text.splitlines()
                                       if not line.startswith("#"))
        return result

    def records(self):
        """{file: content} of the state directory's VIF records; plus what is
        left in the queue, results and pending directories."""
        records, left = {}, []
        for entry in sorted(os.listdir(self.state_dir)):
            path = os.path.join(self.state_dir, entry)
            if entry.endswith(".json"):
                with open(path) as handle:
                    records[entry] = json.load(handle)
            elif entry in ("queue", "results", "pending") and os.path.isdir(path):
                left.extend("%s/%s" % (entry, name) for name in os.listdir(path))
        return records, left


def wrap_tools(host, logfile):
    """Every save/restore tool of ours behind a shell wrapper that logs its
    family and kind, then execs the real tool; returns the config keys."""
    wrapdir = os.path.join(host.dir, "wrap")
    os.makedirs(wrapdir, exist_ok=True)
    tools = {"iptables": host.tools["IPTABLES"], "ip6tables": host.tools["IP6TABLES"],
             "ebtables": host.tools["EBTABLES"]}
    keys = {}
    for key, (family, kind) in WRAPPED.items():
        real = shutil.which("%s-%s" % (tools[family], kind),
                            path="/usr/sbin:/sbin:/usr/bin:/bin")
        path = os.path.join(wrapdir, "%s-%s" % (family, kind))
        with open(path, "w") as handle:
            handle.write('#!/bin/sh\necho "%s %s $$" >> %s\nexec %s "$@"\n'
                         % (family, kind, logfile, real))
        os.chmod(path, 0o755)
        keys[key] = path
    return keys


# ------------------------------------------------------------------ a storm

def storm(ns, argvs, workers, env, extra_env=None, timeout=1800):
    """Run every argv, workers at a time, inside namespace ns: a thread
    enters ns once and launches (vfork and exec, nothing in between);
    returns (wall seconds from the first launch to the last exit,
    [{"status", "seconds", "launched", "output"}] in argv order, CPU
    seconds of the hooks and the tools they ran)."""
    box = {}
    if extra_env:
        env = dict(env, **extra_env)

    def body():
        fd = os.open(nsutil.ns_path(ns), os.O_RDONLY)
        try:
            if _libc.setns(fd, nsutil.CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns %s" % ns)
        finally:
            os.close(fd)
        runs = [None] * len(argvs)
        cpu = [0.0]  # seconds of CPU the hooks and their tools used
        running = {}  # pidfd -> (index, process, output file, launch time)
        poller = __import__("select").poll()
        following = 0
        deadline = time.perf_counter() + timeout
        start = time.perf_counter()
        while following < len(argvs) or running:
            if stop.is_set():  # interrupted: end what runs, launch no more
                for _, process, _, _, _ in running.values():
                    process.kill()
                    process.wait()
                raise KeyboardInterrupt("storm in %s stopped" % ns)
            while following < len(argvs) and len(running) < workers:
                output = tempfile.TemporaryFile()
                launched = time.perf_counter()
                wall = time.time()
                process = subprocess.Popen(argvs[following], stdin=subprocess.DEVNULL,
                                           stdout=output, stderr=subprocess.STDOUT, env=env,
                                           close_fds=True)
                pidfd = os.pidfd_open(process.pid)
                poller.register(pidfd, __import__("select").POLLIN)
                running[pidfd] = (following, process, output, launched, wall)
                following += 1
            left = deadline - time.perf_counter()
            if left <= 0:
                for _, process, _, _, _ in running.values():
                    process.kill()
                raise RuntimeError("storm in %s did not end within %ss" % (ns, timeout))
            for pidfd, _ in poller.poll(min(left, 1) * 1000):
                index, process, output, launched, wall = running.pop(pidfd)
                poller.unregister(pidfd)
                os.close(pidfd)
                _, status, usage = os.wait4(process.pid, 0)
                ended = time.perf_counter()
                process.returncode = os.waitstatus_to_exitcode(status)
                cpu[0] += usage.ru_utime + usage.ru_stime
                output.seek(0)
                runs[index] = {"status": process.returncode, "seconds": ended - launched,
                               "launched": wall, "offset": launched - start,
                               "output": output.read().decode(errors="replace")[-2000:]}
                output.close()
        box["wall"] = time.perf_counter() - start
        box["runs"] = runs
        box["cpu"] = cpu[0]

    def guarded():
        try:
            body()
        except BaseException as error:  # re-raised in the caller's thread
            box["error"] = error
    stop = threading.Event()
    thread = threading.Thread(target=guarded, name="storm-" + ns)
    thread.start()
    try:
        thread.join()
    except BaseException:
        stop.set()
        thread.join()
        raise
    if "error" in box:
        raise box["error"]
    return box["wall"], box["runs"], box["cpu"]


def failed(runs):
    return [r for r in runs if r["status"] != 0]


def failure_kinds(runs):
    """{error code or exit status: hooks} of the hooks that failed."""
    kinds = {}
    for run in failed(runs):
        code = re.search(r"VIF_RULES_[A-Z_]+", run["output"])
        name = code and code.group(0) or "exit %s" % run["status"]
        kinds[name] = kinds.get(name, 0) + 1
    return kinds


def storm_domids(n, r):
    """The N storm guests after the R resident ones."""
    domids = workload.resident_domids(r + n)
    return domids[:r], domids[r:]


def baseline_rule_counts(host):
    """Rules in the baseline's built-in FORWARD chains, by family."""
    dumps = host.dumps()
    return {"iptables": dumps["iptables"].count("-A FORWARD "),
            "ebtables": dumps["ebtables"].count("-A FORWARD "),
            "arptables": len([line for line in dumps["arptables"].splitlines()
                              if line.startswith("-j ACCEPT")])}


def reference(prefix, workdir, backend, tree, python, n, r):
    """Dumps and records of a host where the storm's VIFs were applied one
    by one by the hook (after the same R resident)."""
    host = StormHost(prefix, "s%d" % next(_labels), workdir, backend)
    try:
        resident, domids = storm_domids(n, r)
        host.start_ours(python, tree, resident)
        started = time.perf_counter()
        for domid in domids:
            host.run(ours_argv(python, tree, "online", domid), timeout=120).check()
        seconds = time.perf_counter() - started
        return host.dumps(), host.records()[0], seconds
    finally:
        nsutil.delete(host.ns)


def same_ruleset(differ):
    """Every family's dump and the records equal the serial host's (files
    left in queue/results are told apart: a caller that gave up leaves one)."""
    return not [d for d in differ if not d.startswith("left over")]


def compare(host, ref_dumps, ref_records):
    """Which families (and 'records', 'left over') differ from the serial host."""
    dumps = host.dumps()
    records, left = host.records()
    differ = [f for f in sorted(ref_dumps) if dumps[f] != ref_dumps[f]]
    if records != ref_records:
        missing = sorted(set(ref_records) - set(records))
        other = sorted(n for n in records if records[n] != ref_records.get(n))
        differ.append("records (%d missing%s%s)" % (
            len(missing), missing and ": " + " ".join(m[:-5] for m in missing[:8]) or "",
            other and "; %d other: %s" % (len(other), " ".join(other[:8])) or ""))
    if left:
        differ.append("left over: %s" % ", ".join(sorted(left)[:5]))
    return differ


_labels = itertools.count()


def run_ours(prefix, label, workdir, backend, tree, python, n, k, r, wrap_log=None,
             probe_out=None):
    """A fresh host with R resident; N hooks of ours, K at a time. wrap_log:
    the save/restore tools behind logging wrappers; probe_out: through the
    probe. Returns (host, wall, runs, CPU seconds); the caller deletes the host."""
    host = StormHost(prefix, "%s%d" % (label, next(_labels)), workdir, backend)
    resident, domids = storm_domids(n, r)
    host.start_ours(python, tree, resident)
    # warm-up (bytecode written, caches filled): a guest outside the storm
    host.run(ours_argv(python, tree, "online", workload.MEASURED_DOMID)).check()
    host.run(ours_argv(python, tree, "offline", workload.MEASURED_DOMID)).check()
    if wrap_log:
        host.configure(**wrap_tools(host, wrap_log))
    extra_env = None
    if probe_out:
        extra_env = {"VR_STORM_TREE": tree.plugin, "VR_STORM_PROBE_OUT": probe_out}
    argvs = [ours_argv(python, tree, "online", d, probe=bool(probe_out)) for d in domids]
    wall, runs, cpu = storm(host.ns, argvs, k, host.env(), extra_env)
    if wrap_log:
        host.configure()  # the plain tools again, for the dumps
    return host, wall, runs, cpu


def run_baseline(prefix, label, workdir, backend, python, n, k, r):
    host = StormHost(prefix, "%s%d" % (label, next(_labels)), workdir, backend)
    resident, domids = storm_domids(n, r)
    host.populate_baseline(resident)
    host.run(baseline_argv(python, "online", workload.MEASURED_DOMID)).check()
    host.run(baseline_argv(python, "offline", workload.MEASURED_DOMID)).check()
    argvs = [baseline_argv(python, "online", d) for d in domids]
    wall, runs, cpu = storm(host.ns, argvs, k, host.env())
    return host, wall, runs, cpu


def bench_storms(prefix, workdir, backend, tree, cfg, pythons, parts, result, checkpoint):
    out = result.setdefault("storm", {})
    sides = cfg["sides"]
    for n, k, r in cfg["storms"]:
        key = "%d/%d/%d" % (n, k, r)
        entry = out.setdefault(key, {"n": n, "k": k, "r": r, "pythons": {}})
        first = list(pythons)[0]
        if "ours" in sides or set(parts) & {"count", "profile"}:
            log("%s %s: reference host, %d VIFs applied one by one (%s)" % (
                backend, key, n, first))
            ref_dumps, ref_records, serial = reference(prefix, workdir, backend, tree,
                                                       pythons[first], n, r)
            entry["serial_seconds"] = serial
            entry["serial_python"] = first
        for version in pythons:
            entry["pythons"].setdefault(version, {"ours": [], "baseline": [], "equal": [],
                                                  "differ": [], "failures": 0,
                                                  "baseline_failures": 0,
                                                  "baseline_rules": []})
        if "storm" in parts:
            for rep in range(cfg["reps"]):
                for version, python in pythons.items():
                    e = entry["pythons"][version]
                    sides = [side for side in ("ours", "baseline") if side in cfg["sides"]]
                    if rep % 2:
                        sides.reverse()  # neither side always runs on a fresher machine
                    for side in sides:
                        label = side[0]
                        if side == "ours":
                            host, wall, runs, cpu = run_ours(prefix, label, workdir, backend, tree,
                                                        python, n, k, r)
                            try:
                                differ = compare(host, ref_dumps, ref_records)
                            finally:
                                nsutil.delete(host.ns)
                            e["ours"].append(wall)
                            e.setdefault("ours_cpu", []).append(cpu)
                            e["equal"].append(same_ruleset(differ))
                            e["differ"].append(differ)
                            e["failures"] += len(failed(runs))
                            e.setdefault("failure_kinds", []).append(failure_kinds(runs))
                            e.setdefault("hook_seconds_max", []).append(
                                max(x["seconds"] for x in runs))
                            if failed(runs):
                                log("ours failed: %s" % failed(runs)[0]["output"][-500:])
                        else:
                            host, wall, runs, cpu = run_baseline(prefix, label, workdir, backend,
                                                            python, n, k, r)
                            try:
                                e["baseline_rules"].append(baseline_rule_counts(host))
                            finally:
                                nsutil.delete(host.ns)
                            e["baseline"].append(wall)
                            e.setdefault("baseline_cpu", []).append(cpu)
                            e["baseline_failures"] += len(failed(runs))
                        log("%s %s py%s rep %d: %s %.2fs (CPU %.2fs)" % (
                            backend, key, version, rep, side, wall, cpu))
                        checkpoint()
            for version, e in entry["pythons"].items():
                if not (e["ours"] and e["baseline"]):
                    continue  # one side only (--sides): no ratio
                e["ours_stats"] = stats(e["ours"])
                e["baseline_stats"] = stats(e["baseline"])
                e["ratio"] = e["ours_stats"]["median"] / e["baseline_stats"]["median"]
                e["cpu_ratio"] = (statistics.median(e["ours_cpu"]) /
                                  statistics.median(e["baseline_cpu"]))
                e["baseline_rules_expected"] = {"iptables": 2 * (n + r), "ebtables": 5 * (n + r),
                                                "arptables": 4 * (n + r)}
        if "count" in parts:
            for version, python in pythons.items():
                e = entry["pythons"][version]
                logfile = os.path.join(workdir, "tools-%s-%s-%s.log" % (backend, key.replace(
                    "/", "-"), version))
                probe_out = None
                if "profile" in parts:  # one run for both: neither is timed
                    probe_out = logfile + ".probe"
                host, wall, runs, cpu = run_ours(prefix, "c", workdir, backend, tree, python,
                                                 n, k, r, wrap_log=logfile, probe_out=probe_out)
                try:
                    differ = compare(host, ref_dumps, ref_records)
                finally:
                    nsutil.delete(host.ns)
                counts = {}
                if os.path.exists(logfile):
                    with open(logfile) as handle:
                        for line in handle:
                            family, kind = line.split()[:2]
                            counts.setdefault(kind, {}).setdefault(family, 0)
                            counts[kind][family] += 1
                e["count"] = {"restores": counts.get("restore", {}), "saves": counts.get("save", {}),
                              "wall": wall, "equal": same_ruleset(differ), "differ": differ,
                              "failures": len(failed(runs)), "events": n}
                log("%s %s py%s count run: restores %s, saves %s (%.2fs, equal %s)" % (
                    backend, key, version, counts.get("restore"), counts.get("save"), wall,
                    not differ))
                if probe_out:
                    e["profile"] = profile(probe_out, runs, wall)
                    e["profile"]["equal"] = same_ruleset(differ)
                    e["profile"]["with_wrappers"] = True
                    log("%s %s py%s profile: %s" % (backend, key, version,
                                                     profile_line(e["profile"])))
                checkpoint()
        if "profile" in parts and "count" not in parts:
            for version, python in pythons.items():
                e = entry["pythons"][version]
                probe_out = os.path.join(workdir, "probe-%s-%s-%s.jsonl" % (
                    backend, key.replace("/", "-"), version))
                host, wall, runs, cpu = run_ours(prefix, "p", workdir, backend, tree, python, n,
                                            k, r, probe_out=probe_out)
                try:
                    differ = compare(host, ref_dumps, ref_records)
                finally:
                    nsutil.delete(host.ns)
                e["profile"] = profile(probe_out, runs, wall)
                e["profile"]["equal"] = not differ
                log("%s %s py%s profile: %s" % (backend, key, version,
                                                 profile_line(e["profile"])))


# ------------------------------------------------------------------ the profile

def profile(path, runs, wall):
    """What the probe saw: groups, the holders' time, idle lock time."""
    records = []
    with open(path) as handle:
        for line in handle:
            records.append(json.loads(line))
    commits = []
    for rec in records:
        for c in rec["commits"]:
            if "group" in c:
                commits.append(c)
    commits.sort(key=lambda c: c["acquired"])
    held = [c["released"] - c["acquired"] for c in commits]
    empty = [c for c in commits if c["group"] == 0]
    groups = [c["group"] for c in commits if c["group"] > 0]
    launched = min(r["launched"] for r in runs)
    last_end = max(rec["end"] for rec in records)
    busy = sum(held)
    gaps = [b["acquired"] - a["released"] for a, b in zip(commits, commits[1:])]
    # Python start: from launch to the probe's first line, matched by order
    # of launch and start (close enough for a median).
    startup = sorted(rec["python_start"] for rec in records)
    launches = sorted(r["launched"] for r in runs)
    startup = [s - l for s, l in zip(startup, launches)]
    split = {}
    for key in ("read_records", "save", "parse", "render_tables", "restore_text", "restore"):
        split[key] = sum(c.get(key, 0.0) for c in commits)
    first_commit = commits and commits[0]["acquired"] - launched or 0.0
    return {
        "wall": wall, "events": len(records), "commits": len(groups),
        "empty_commits": len(empty), "groups": groups,
        "group_mean": groups and statistics.mean(groups) or 0,
        "group_max": groups and max(groups) or 0,
        "singles": sum(rec["single"] for rec in records),
        "held_total": busy, "held_per_commit": held and statistics.mean(held) or 0,
        "held_fraction": busy / max(1e-9, last_end - launched),
        "idle_between_commits": sum(g for g in gaps if g > 0),
        "idle_gap_median": gaps and statistics.median(gaps) or 0,
        "before_first_commit": first_commit,
        "split": split,
        "holder_cpu": sum(c.get("cpu", 0.0) for c in commits),
        "lock_tries": sum(rec["lock_tries"] for rec in records),
        "lock_busy": sum(rec["lock_busy"] for rec in records),
        "sleeps": sum(rec["sleeps"] for rec in records),
        "sleep_seconds": sum(rec["sleep_seconds"] for rec in records),
        "python_start_median": startup and statistics.median(startup) or 0,
        "process_seconds_median": statistics.median(r["seconds"] for r in runs),
        "per_commit": [{"group": c["group"], "held": c["released"] - c["acquired"],
                        "save": c.get("save", 0), "restore": c.get("restore", 0),
                        "cpu": c.get("cpu", 0),
                        "read": c.get("read_records", 0)} for c in commits],
    }


def profile_line(p):
    s = p["split"]
    return ("%d events in %d commits (groups mean %.1f, max %d; %d single-path), lock held "
            "%.2fs of %.2fs (%.0f%%), idle between commits %.2fs; in commits: records %.2fs, "
            "save %.2fs (parse %.2fs), render %.2fs, restore %.2fs (text %.2fs); %d lock "
            "tries, %d sleeps (%.2fs); python start %.0f ms" % (
                p["events"], p["commits"], p["group_mean"], p["group_max"], p["singles"],
                p["held_total"], p["wall"], 100 * p["held_fraction"],
                p["idle_between_commits"], s["read_records"], s["save"], s["parse"],
                s["render_tables"], s["restore"], s["restore_text"], p["lock_tries"],
                p["sleeps"], p["sleep_seconds"], 1000 * p["python_start_median"]))


# ------------------------------------------------------------------ one group's cost

def bench_group_cost(prefix, workdir, backend, tree, cfg, pythons, result, checkpoint):
    """What one commit costs the holder, by VIFs on record: a group of G
    changes (the benchmark holds the host's lock until G hooks have queued
    theirs, then lets go) against one change alone (the incremental path),
    through the probe; CPU seconds too, which the machine's load changes
    less than wall time."""
    out = result.setdefault("group_cost", {"group": cfg["group"], "sizes": {}})
    for resident in cfg["group_resident"]:
        for version, python in pythons.items():
            host = StormHost(prefix, "g%d" % next(_labels), workdir, backend)
            try:
                host.start_ours(python, tree, workload.resident_domids(resident))
                probe_out = os.path.join(host.dir, "probe.jsonl")
                env = host.env(VR_STORM_TREE=tree.plugin, VR_STORM_PROBE_OUT=probe_out)
                domids = workload.resident_domids(resident + cfg["group"] + 2)[resident:]
                for domid in domids[:2]:  # warm-up, then the change alone
                    host.run(ours_argv(python, tree, "online", domid, probe=True),
                             env=env).check()
                alone = _commits(probe_out)[-1]
                group = _held_group(host, python, tree, domids[2:], env, probe_out)
            except RuntimeError as error:  # e.g. a tool's timeout on a loaded machine
                log("%s group cost at %d resident, py%s failed: %s" % (
                    backend, resident, version, str(error)[:300]))
                out["sizes"].setdefault(str(resident), {})[version] = {"error": str(error)[:300]}
                continue
            finally:
                nsutil.delete(host.ns)
            entry = {"alone": alone, "group": group, "python": version}
            out["sizes"].setdefault(str(resident), {})[version] = entry
            log("%s group cost at %d resident, py%s: alone %.0f ms CPU (%.0f ms wall); "
                "group of %d %.0f ms CPU (%.0f ms wall) = %.1f x alone" % (
                    backend, resident, version, 1000 * alone["cpu"],
                    1000 * (alone["released"] - alone["acquired"]), group["group"],
                    1000 * group["cpu"], 1000 * (group["released"] - group["acquired"]),
                    group["cpu"] / max(1e-6, alone["cpu"])))
            checkpoint()


def _commits(probe_out):
    commits = []
    with open(probe_out) as handle:
        for line in handle:
            commits.extend(c for c in json.loads(line)["commits"] if c.get("group"))
    return commits


def _held_group(host, python, tree, domids, env, probe_out):
    """Hold the host's lock until every hook of domids has queued its change;
    let go; the commit that took them all (the probe's record of it)."""
    import fcntl
    queue = os.path.join(host.state_dir, "queue")
    lock = open(os.path.join(host.dir, "lock"), "a")
    processes = []
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        for domid in domids:
            processes.append(nsutil.popen(host.ns, ours_argv(python, tree, "online", domid,
                                                             probe=True), env=env))
        deadline = time.time() + 120
        while len([n for n in os.listdir(queue) if not n.endswith(".tmp")]) < len(domids):
            if time.time() > deadline:
                raise RuntimeError("the hooks did not queue their changes")
            time.sleep(0.05)
    finally:
        lock.close()
    for process in processes:
        out, err = process.communicate(timeout=300)
        if process.returncode != 0:
            raise RuntimeError("hook failed: %s %s" % (out[-300:], err[-300:]))
    return max(_commits(probe_out), key=lambda c: c["group"])


# ------------------------------------------------------------------ one event

def _sample(samples, name, result):
    """Wall seconds under name, CPU seconds (with the children) under name_cpu."""
    samples.setdefault(name, []).append(result.seconds)
    samples.setdefault(name + "_cpu", []).append(result.rusage.ru_utime +
                                                 result.rusage.ru_stime)


def bench_single(prefix, workdir, backend, tree, cfg, pythons, result, checkpoint,
                 before=None):
    """One 'online' (and its 'offline') at R resident VIFs, per interpreter,
    ours and the baseline interleaved; before: another tree of ours (e.g.
    the commit before group commit) measured in turn on a host of its own."""
    count = cfg["single_resident"]
    resident = workload.resident_domids(count)
    ours = StormHost(prefix, "eo%d" % next(_labels), workdir, backend)
    base = StormHost(prefix, "eb%d" % next(_labels), workdir, backend)
    old = before and StormHost(prefix, "ep%d" % next(_labels), workdir, backend)
    try:
        ours.start_ours(list(pythons.values())[0], tree, resident)
        base.populate_baseline(resident)
        if old:
            old.start_ours(list(pythons.values())[0], before, resident)
        measured = workload.MEASURED_DOMID
        for python in pythons.values():  # warm-up, untimed
            for action in ("online", "offline"):
                ours.run(ours_argv(python, tree, action, measured)).check()
                base.run(baseline_argv(python, action, measured)).check()
                if old:
                    old.run(ours_argv(python, before, action, measured)).check()
        samples = dict((v, {"ours": [], "ours_offline": [], "baseline": []}) for v in pythons)
        for _ in range(cfg["single_reps"]):
            for version, python in pythons.items():
                s = samples[version]
                if old:
                    _sample(s, "before", old.run(ours_argv(python, before, "online",
                                                           measured)).check())
                    old.run(ours_argv(python, before, "offline", measured)).check()
                _sample(s, "ours", ours.run(ours_argv(python, tree, "online",
                                                      measured)).check())
                _sample(s, "ours_offline", ours.run(ours_argv(python, tree, "offline",
                                                              measured)).check())
                _sample(s, "baseline", base.run(baseline_argv(python, "online",
                                                              measured)).check())
                base.run(baseline_argv(python, "offline", measured)).check()
    finally:
        for host in (ours, base, old):
            if host:
                nsutil.delete(host.ns)
    single = result.setdefault("single", {"resident": count, "pythons": {}})
    if before:
        single["before"] = before.label
    for version, s in samples.items():
        entry = dict((k, stats(v)) for k, v in s.items())
        entry["ratio"] = entry["ours"]["median"] / entry["baseline"]["median"]
        entry["cpu_ratio"] = entry["ours_cpu"]["median"] / entry["baseline_cpu"]["median"]
        if "before" in entry:
            entry["before_ratio"] = entry["before"]["median"] / entry["baseline"]["median"]
        single["pythons"][version] = entry
        log("%s single event at %d resident, py%s: ours %.1f ms, baseline %.1f ms (x%.2f)" % (
            backend, count, version, 1000 * entry["ours"]["median"],
            1000 * entry["baseline"]["median"], entry["ratio"]))
    checkpoint()


# ------------------------------------------------------------------ targets, report

def targets(results):
    found = []
    for backend, r in results.items():
        for key, entry in r.get("storm", {}).items():
            for version, e in entry["pythons"].items():
                if "ratio" in e:
                    found.append({"target": "storm %s (N/K/R): ours/baseline" % key,
                                  "backend": backend, "python": version,
                                  "value": round(e["ratio"], 3),
                                  "limit": "<= %g" % STORM_TARGET,
                                  "pass": e["ratio"] <= STORM_TARGET and not e["failures"]})
                    found.append({"target": "storm %s: ruleset = one by one" % key,
                                  "backend": backend, "python": version,
                                  "value": "%d/%d runs" % (sum(e["equal"]), len(e["equal"])),
                                  "limit": "every run", "pass": all(e["equal"])})
                if "count" in e:
                    c = e["count"]
                    most = max(list(c["restores"].values()) or [0])
                    found.append({"target": "storm %s: restores per family < events" % key,
                                  "backend": backend, "python": version,
                                  "value": "%d / %d" % (most, c["events"]),
                                  "limit": "< %d" % c["events"],
                                  "pass": most < c["events"] and c["equal"]})
        for label, single in r.get("single_runs") or (
                r.get("single") and [("", r["single"])]) or []:
            for version, e in single["pythons"].items():
                found.append({"target": ("one online at %d resident: ours/baseline %s"
                                         % (single["resident"], label)).strip(),
                              "backend": backend, "python": version,
                              "value": round(e["ratio"], 3), "limit": "<= %g" % SINGLE_TARGET,
                              "pass": e["ratio"] <= SINGLE_TARGET})
    return found


def _s(st):
    return "%.2f [%.2f-%.2f]" % (st["median"], st["min"], st["max"])


def _ms(st):
    return "%.1f [%.1f-%.1f]" % (1000 * st["median"], 1000 * st["min"], 1000 * st["max"])


def _families(counts):
    return ", ".join("%s %d" % (f, counts[f]) for f in ("iptables", "ip6tables", "ebtables")
                     if f in counts) or "-"


def markdown(run):
    """The storm section of RESULTS.md, between its markers."""
    results = run["backends"]
    lines = [BEGIN, "## Boot storms (issue 12)", "",
             "Produced by `tests/bench/storm_bench.py`%s (also `./build.sh bench --storm`) on "
             "%s, core at commit(s) %s; %d cores, kernel %s. The machine was shared with other "
             "engineers' tests and builds while it ran (load average %s at the start): "
             "figures are medians [min-max] over the runs counted in each row, each on fresh "
             "hosts, ours and the baseline interleaved; CPU is the user+system time of the "
             "hooks and the tools they ran, less sensitive to the others' load than wall "
             "time." % (run["quick"] and " --quick" or "", run["date"], run["commit"],
                        os.cpu_count(), os.uname().release, run["load"]),
             "Every script runs as its `#!` line says under the interpreter named (ours "
             "`python -S`, the baseline `python`); the baseline is "
             "`tests/bench/baseline_hook.py` (the 2010 per-rule script: no lock, one "
             "iptables/ebtables/arptables process per rule, 11 per event of a guest with 2 "
             "IPv4 addresses).", ""]
    for backend, r in results.items():
        st = r.get("storm")
        if st:
            lines += ["### N VIFs online at once, K hooks at a time, R already protected "
                      "(iptables %s)" % backend, "",
                      "| N / K / R | Python | runs | ours (s) | baseline (s) | ours/baseline | "
                      "target <= %g | CPU ours/baseline (s) | ruleset = one by one | restores "
                      "(per family) | saves |" % STORM_TARGET,
                      "|---|---|---:|---:|---:|---:|---|---|---|---|---|"]
            for key, entry in st.items():
                for version, e in entry["pythons"].items():
                    if "ratio" not in e and e.get("baseline"):
                        lines.append("| %s | %s | %d | - | %s | - | not measured | - / %.1f | - "
                                     "| - | - |" % (key, version, len(e["baseline"]),
                                                    _s(stats(e["baseline"])),
                                                    statistics.median(e["baseline_cpu"])))
                    if "ratio" not in e:
                        continue
                    c = e.get("count", {})
                    lines.append("| %s | %s | %d | %s | %s | %.3f | %s | %.1f / %.1f | %d/%d%s "
                                 "| %s | %s |" % (
                        key, version, len(e["ours"]), _s(e["ours_stats"]),
                        _s(e["baseline_stats"]),
                        e["ratio"],
                        (e["ratio"] <= STORM_TARGET and not e["failures"]) and "met"
                        or "**missed**",
                        statistics.median(e["ours_cpu"]), statistics.median(e["baseline_cpu"]),
                        sum(e["equal"]), len(e["equal"]),
                        (c and " (count run %s)" % (c["equal"] and "equal" or "DIFFERS")) or "",
                        c and _families(c["restores"]) or "-",
                        c and _families(c["saves"]) or "-"))
            lines.append("")
            notes = []
            for key, entry in st.items():
                if "serial_seconds" in entry:
                    notes.append("%s: the serial reference (the %d VIFs applied one by one by the "
                                 "hook under %s) took %.1f s." % (
                                     key, entry["n"], entry["serial_python"],
                                     entry["serial_seconds"]))
                for version, e in entry["pythons"].items():
                    if e.get("ours") and e.get("failures"):
                        notes.append("%s py%s: %d of our hooks exited non-zero (%s)." % (
                            key, version, e["failures"], [k for k in e.get("failure_kinds", [])
                                                          if k] or "kinds not recorded"))
                    if e.get("baseline_failures"):
                        notes.append("%s py%s: %d baseline hooks exited non-zero." % (
                            key, version, e["baseline_failures"]))
                    lost = [rc for rc in e.get("baseline_rules", [])
                            if rc != e.get("baseline_rules_expected")]
                    if lost:
                        notes.append("%s py%s: the baseline ended with %s rules in FORWARD "
                                     "instead of %s (per-rule tools racing)." % (
                                         key, version, lost[0], e["baseline_rules_expected"]))
                    for differ in [d for d in e.get("differ", []) if d]:
                        left = [x for x in differ if x.startswith("left over")]
                        other = [x for x in differ if not x.startswith("left over")]
                        if other:
                            notes.append("%s py%s: differs from one by one in %s." % (
                                key, version, ", ".join(other)))
                        if left:
                            notes.append("%s py%s: files left in STATE_DIR (results of "
                                         "callers that gave up at LOCK_TIMEOUT): %s" % (
                                             key, version, left[0][len("left over: "):]))
            lines += ["- " + note for note in notes] + [""]
            profiled = [(key, version, e["profile"]) for key, entry in st.items()
                        for version, e in entry["pythons"].items() if "profile" in e]
            if profiled:
                lines += ["### Where a storm's time goes (profiling run through "
                          "`storm_probe.py`, not timed)", "",
                          "| N / K / R | Python | wall (s) | commits | group size mean/max | "
                          "lock held | idle lock between commits (s) | per commit: records / "
                          "save / render / restore (ms) | holder CPU per commit (ms) | lock "
                          "tries / sleeps | Python start (ms) |",
                          "|---|---|---:|---:|---|---|---:|---|---:|---|---:|"]
                for key, version, p in profiled:
                    s, c = p["split"], max(1, p["commits"])
                    lines.append("| %s | %s | %.2f | %d (+%d empty) | %.1f / %d | %.2f s (%.0f%%) "
                                 "| %.2f | %.1f / %.1f / %.1f / %.1f | %s | %d / %d | %.0f |" % (
                                     key, version, p["wall"], p["commits"], p["empty_commits"],
                                     p["group_mean"], p["group_max"], p["held_total"],
                                     100 * p["held_fraction"], p["idle_between_commits"],
                                     1000 * s["read_records"] / c, 1000 * s["save"] / c,
                                     1000 * s["render_tables"] / c, 1000 * s["restore"] / c,
                                     "holder_cpu" in p and "%.0f" % (1000 * p["holder_cpu"] / c)
                                     or "-", p["lock_tries"], p["sleeps"],
                                     1000 * p["python_start_median"]))
                lines.append("")
        gc = r.get("group_cost")
        if gc and gc["sizes"]:
            lines += ["### What one commit costs the lock holder (iptables %s; through "
                      "`storm_probe.py`, `--parts groupcost`)" % backend, "",
                      "The benchmark holds the host's lock until %d hooks have queued their "
                      "change, then lets go: one of them commits the group (a full rebuild from "
                      "the records). 'Alone' is one change with nobody waiting (the incremental "
                      "path). CPU = user+system of the holder and the tools it ran; wall = lock "
                      "held." % gc["group"], "",
                      "| VIFs on record | Python | alone: CPU / wall (ms) | group of %d: CPU / "
                      "wall (ms) | group / alone (CPU) | group's wall: records / save / render "
                      "/ restore (ms) |" % gc["group"], "|---:|---|---:|---:|---:|---|"]
            for resident in sorted(gc["sizes"], key=int):
                for version, e in gc["sizes"][resident].items():
                    if "error" in e:
                        lines.append("| %s | %s | failed: %s | | | |" % (
                            resident, version, e["error"][-160:].replace("|", "/")))
                        continue
                    a, g = e["alone"], e["group"]
                    lines.append("| %s | %s | %.0f / %.0f | %.0f / %.0f | %.1f | %.0f / %.0f / "
                                 "%.0f / %.0f |" % (
                                     resident, version, 1000 * a["cpu"],
                                     1000 * (a["released"] - a["acquired"]), 1000 * g["cpu"],
                                     1000 * (g["released"] - g["acquired"]),
                                     g["cpu"] / max(1e-6, a["cpu"]),
                                     1000 * g.get("read_records", 0), 1000 * g.get("save", 0),
                                     1000 * g.get("render_tables", 0),
                                     1000 * g.get("restore", 0)))
            lines.append("")
        singles = r.get("single_runs") or (r.get("single") and [("this run", r["single"])])
        if singles:
            first = singles[0][1]
            lines += ["### One `online` of %s at %d resident VIFs (iptables %s), median of "
                      "the events counted, per run" % (workload.MEASURED_VIF, first["resident"],
                                                      backend), "",
                      "| run | Python | events | ours (ms) | baseline (ms) | ours/baseline | "
                      "target <= %g | ours `offline` (ms) | ours before group commit (ms) | "
                      "CPU ours / before / baseline (ms) |" % SINGLE_TARGET,
                      "|---|---|---:|---:|---:|---:|---|---:|---:|---|"]
        for label, single in singles or []:
            for version, e in single["pythons"].items():
                lines.append("| %s | %s | %d | %s | %s | %.2f | %s | %s | %s | %s |" % (
                    label, version, e["ours"]["n"], _ms(e["ours"]), _ms(e["baseline"]),
                    e["ratio"],
                    e["ratio"] <= SINGLE_TARGET and "met" or "**missed**",
                    _ms(e["ours_offline"]),
                    "before" in e and "%s (%.2f of the baseline)" % (
                        _ms(e["before"]), e["before_ratio"]) or "-",
                    "ours_cpu" in e and "%.1f / %s / %.1f" % (
                        1000 * e["ours_cpu"]["median"],
                        "before_cpu" in e and "%.1f" % (1000 * e["before_cpu"]["median"])
                        or "-", 1000 * e["baseline_cpu"]["median"]) or "-"))
        if singles:
            lines.append("")
            befores = [single["before"] for label, single in singles if single.get("before")]
            if befores:
                lines += ["'Before group commit': the hook of %s, on a host of its own with the "
                          "same resident VIFs, measured in turn with the others." %
                          befores[0].replace("tree-", ""), ""]
    for note in run.get("notes", []):
        lines += ["Note: " + note, ""]
    lines += ["How it was measured: a thread enters the host's namespace and keeps K hooks "
              "running (vfork and exec, no shell, no `ip netns exec`) until N have run; the "
              "wall time runs from the first launch to the last exit. Resident VIFs: ours by "
              "their records and one `host_rules.py start`, the baseline's by restore of the "
              "rules its hook would have added (and one arptables process per ARP rule). "
              "Ruleset equality: `iptables-save`, `ip6tables-save`, `ebtables-save` "
              "(counters zeroed) and `arptables -L -n` of the storm's host against a host "
              "where the same VIFs were applied one by one by the hook, and the VIF records "
              "of both; nothing may be left in the queue, results or pending directories. "
              "Restore processes: a separate run with every save/restore tool of ours behind "
              "a wrapper that logs and execs the real tool. The hook and host-rules are "
              "copied once before the run (bytecode written there by each interpreter's "
              "warm-up).", END]
    return "\n".join(lines) + "\n"


def update_results(path, section):
    """Replace the storm section of RESULTS.md (or append it)."""
    text = ""
    if os.path.exists(path):
        with open(path) as handle:
            text = handle.read()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + (tail and "\n" + tail or "")
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    with open(path, "w") as handle:
        handle.write(text)


def tree_of_commit(source, commit, workdir):
    """The hook and host-rules of a commit of source's repository."""
    target = os.path.join(workdir, "commit-" + commit)
    os.makedirs(target)
    archive = subprocess.run(["git", "-C", source, "archive", commit, "xapi-plugin",
                              "host-rules"], capture_output=True, check=True, timeout=60)
    subprocess.run(["tar", "-x", "-C", target], input=archive.stdout, check=True, timeout=60)
    return Tree(target, workdir, "tree-" + commit)


def run(source, workdir, backends, cfg, pythons, parts, prefix, save=None, before=None):
    """Every part for every backend; the results as a dict (written to save
    as they come, too)."""
    tree = Tree(source, workdir)
    before = before and tree_of_commit(source, before, workdir)
    started = time.time()
    out = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "commit": bench.tree_commit(source), "config": cfg, "pythons": pythons,
           "load": "%.1f" % os.getloadavg()[0], "backends": {}}

    def checkpoint():
        if save:
            with open(save, "w") as handle:
                json.dump(out, handle, indent=1, sort_keys=True)
    for index, backend in enumerate(backends):
        r = out["backends"].setdefault(backend, {})
        p = "%s%d" % (prefix, index)
        if "single" in parts:
            bench_single(p, workdir, backend, tree, cfg, pythons, r, checkpoint, before)
        if "groupcost" in parts:
            bench_group_cost(p, workdir, backend, tree, cfg, pythons, r, checkpoint)
        if set(parts) & {"storm", "count", "profile"}:
            bench_storms(p, workdir, backend, tree, cfg, pythons, parts, r, checkpoint)
    out["seconds"] = time.time() - started
    out["targets"] = targets(out["backends"])
    return out


def available_pythons(versions):
    """{version: interpreter} of those installed."""
    return dict((v, PYTHONS.get(v, v)) for v in versions if os.path.exists(PYTHONS.get(v, v)))


def full_run(tree, workdir, quick=False):
    """The whole storm benchmark with its defaults (for bench.py's full run)."""
    results = run(tree, workdir, ["legacy"], dict(quick and QUICK or FULL),
                  available_pythons(["2.7", "3.6"]), PARTS, "vrs%x" % (os.getpid() % 0xfff))
    results["quick"] = quick
    return results


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=12, K=4, R=4 (smoke test)")
    parser.add_argument("--backends", default="legacy")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--pythons", default="2.7,3.6")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--storms", help="N/K/R,... instead of the issue's")
    parser.add_argument("--sides", help="storm: ours,baseline (default both)")
    parser.add_argument("--single-reps", type=int, help="single: events measured (default 11)")
    parser.add_argument("--tree", default=TOP)
    parser.add_argument("--out", default=os.path.join(TOP, "out", "bench", "storm.json"))
    parser.add_argument("--md", help="RESULTS.md whose storm section to write (default: "
                                     "tests/bench/RESULTS.md for a full run, none for --quick)")
    parser.add_argument("--before", metavar="COMMIT",
                        help="single: also measure the hook of this commit (git archive)")
    parser.add_argument("--from-json", nargs="+", metavar="FILE[:LABEL]",
                        help="no run: write the section from these results (merged; the "
                             "storms of a FILE:LABEL in rows of their own)")
    parser.add_argument("--note", action="append", default=[],
                        help="with --from-json: a line for the section (what the JSON lacks, "
                             "e.g. a run stopped before its end)")
    args = parser.parse_args(argv)
    if args.from_json:
        results = merge(args.from_json)
        results["notes"] = args.note
        section = markdown(results)
        update_results(args.md or os.path.join(HERE, "RESULTS.md"), section)
        print(section)
        report_targets(results["targets"])
        return 0
    if os.geteuid() != 0:
        sys.stderr.write("storm_bench.py: run as root\n")
        return 2
    cfg = dict(args.quick and QUICK or FULL)
    if args.reps:
        cfg["reps"] = args.reps
    if args.single_reps:
        cfg["single_reps"] = args.single_reps
    if args.sides:
        cfg["sides"] = args.sides.split(",")
    if args.storms:
        cfg["storms"] = [tuple(int(x) for x in s.split("/")) for s in args.storms.split(",")]
    pythons = {}
    for version in args.pythons.split(","):
        python = PYTHONS.get(version, version)
        if not os.path.exists(python):
            sys.stderr.write("storm_bench.py: no Python %s (%s)\n" % (version, python))
            return 2
        pythons[version] = python
    def terminate(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    md = args.md or (not args.quick and os.path.join(HERE, "RESULTS.md")) or None
    workdir = tempfile.mkdtemp(prefix="vr-storm-")
    try:
        results = run(os.path.abspath(args.tree), workdir, args.backends.split(","), cfg,
                      pythons, args.parts.split(","), "vrs%x" % (os.getpid() % 0xfff),
                      args.out, args.before)
    finally:
        nsutil.cleanup_all()
        shutil.rmtree(workdir, ignore_errors=True)
    results["quick"] = args.quick
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=1, sort_keys=True)
    section = markdown(results)
    if md:
        update_results(md, section)
    print(section)
    report_targets(results["targets"])
    return 0


def finish(backends):
    """Figures of runs cut short (checkpoints): equality from the differences
    recorded, statistics of the sides measured so far."""
    for r in backends.values():
        for key, entry in r.get("storm", {}).items():
            n, k, rr = entry["n"], entry["k"], entry["r"]
            for e in entry["pythons"].values():
                e["equal"] = [same_ruleset(d) for d in e.get("differ", [])]
                if "count" in e:
                    e["count"]["equal"] = same_ruleset(e["count"]["differ"])
                if e.get("ours") and e.get("baseline"):
                    e["ours_stats"] = stats(e["ours"])
                    e["baseline_stats"] = stats(e["baseline"])
                    e["ratio"] = e["ours_stats"]["median"] / e["baseline_stats"]["median"]
                    e["cpu_ratio"] = (statistics.median(e["ours_cpu"]) /
                                      statistics.median(e["baseline_cpu"]))
                if e.get("baseline"):
                    e["baseline_rules_expected"] = {"iptables": 2 * (n + rr),
                                                    "ebtables": 5 * (n + rr),
                                                    "arptables": 4 * (n + rr)}


def merge(paths):
    """Results of several runs as one (storm entries by N/K/R, single by the
    last run that measured it)."""
    merged = None
    for path in paths:
        label = None
        if ":" in path:  # FILE:LABEL: its storms in rows of their own
            path, label = path.split(":", 1)
        with open(path) as handle:
            run = json.load(handle)
        run.setdefault("quick", False)
        if label:
            for r in run["backends"].values():
                r["storm"] = dict(("%s %s" % (key, label), entry)
                                  for key, entry in r.get("storm", {}).items())
        for r in run["backends"].values():
            if "single" in r:
                r["single_runs"] = [("%s (load %s, %s)" % (run["date"][11:16], run["load"],
                                                           run["commit"]), r["single"])]
        if merged is None:
            merged = run
            continue
        for backend, r in run["backends"].items():
            into = merged["backends"].setdefault(backend, {})
            for key, entry in r.get("storm", {}).items():
                have = into.setdefault("storm", {}).setdefault(key, entry)
                for version, e in entry["pythons"].items():
                    mine = have["pythons"].setdefault(version, e)
                    if mine is not e:  # more runs, or parts measured by another run
                        for name, value in e.items():
                            if isinstance(value, list) and isinstance(mine.get(name), list):
                                mine[name] = mine[name] + value
                            elif name in ("failures", "baseline_failures"):
                                mine[name] = mine.get(name, 0) + value
                            elif value and not mine.get(name):
                                mine[name] = value
                for name in ("serial_seconds", "serial_python"):
                    if name in entry:
                        have.setdefault(name, entry[name])
            if "group_cost" in r:
                into["group_cost"] = r["group_cost"]
            if "single_runs" in r:
                into["single_runs"] = into.get("single_runs", []) + r["single_runs"]
        merged["date"] = "%s and %s" % (merged["date"], run["date"])
        if run["commit"] not in merged["commit"].split(", "):
            merged["commit"] = "%s, %s" % (merged["commit"], run["commit"])
        merged["load"] = "%s, %s" % (merged["load"], run["load"])
    finish(merged["backends"])
    merged["targets"] = targets(merged["backends"])
    return merged


def report_targets(found):
    print("Storm targets:")
    for t in found:
        print("  %-4s %-48s %-6s py%-4s %s (limit %s)" % (
            t["pass"] and "PASS" or "MISS", t["target"], t["backend"], t["python"], t["value"],
            t["limit"]))


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        nsutil.cleanup_all()
        sys.stderr.write("storm_bench.py: interrupted; namespaces removed\n")
        sys.exit(130)
