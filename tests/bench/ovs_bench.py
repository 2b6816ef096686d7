"""The Open vSwitch backend's figures, beside the bridge backend's (bench.py).

On a real Open vSwitch (tests/ovsbed.py: own daemons in a namespace,
userspace datapath), with one real guest on a veth port and the resident
VIFs on patch ports (a port number, no device the datapath polls: 1,000
polled dummy ports would slow the datapath itself, not our flows):
  - one `online` / `offline` event of the guest: wall time and processes,
    with 0 and with N VIFs resident;
  - re-protecting N+1 VIFs after `ovs-ofctl del-flows` (`host_rules.py start`);
  - TCP throughput and 64-byte UDP packets/s guest -> uplink with N VIFs'
    flows, relative to the guest's flows alone.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "xapi-plugin"))

import netbed  # noqa: E402
import ovsbed  # noqa: E402
import workload  # noqa: E402

GUEST = netbed.Guest(workload.MEASURED_VIF, "g", workload.mac_for(workload.MEASURED_DOMID),
                     list(workload.MEASURED_IPS), [])
REPROTECT_LIMIT_S, FORWARDING_LIMIT = 2.0, 0.8
PORTS_PER_TRANSACTION = 50  # ovs-vsctl slows down more than linearly with more


def _median(samples):
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "n": len(samples)}


def _timed(function, reps):
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return _median(samples)


def _processes(bed, argv):
    """Successful execve() calls of argv's children (strace -f), by command."""
    trace = os.path.join(bed.workdir, "strace.%d" % time.time_ns())
    bed.run("h", ["strace", "-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o",
                  trace] + argv, env=bed.env(), timeout=600)
    names = []
    with open(trace) as handle:
        for line in handle:
            found = re.search(r'execve\("([^"]+)".*= 0$', line.strip())
            if found:
                names.append(os.path.basename(found.group(1)))
    os.unlink(trace)
    counts = {}
    for name in names[1:]:  # the command itself
        counts[name] = counts.get(name, 0) + 1
    return counts


class Measure(object):
    def __init__(self, bed, python, hook, host_rules):
        self.bed, self.python, self.hook_path, self.host_rules_path = \
            bed, python, hook, host_rules

    def hook_argv(self, action):
        argv = [self.python] + netbed.shebang_flags(self.hook_path) + [
            self.hook_path, action, GUEST.port]
        if action == "online":
            argv += ["--network", GUEST.network()]
        return argv

    def run(self, argv):
        self.bed.run("h", argv, env=self.bed.env(), timeout=600)

    def event(self, reps):
        online = _timed(lambda: self.run(self.hook_argv("online")), reps)

        def offline_then_online():
            started = time.perf_counter()
            self.run(self.hook_argv("offline"))
            elapsed = time.perf_counter() - started
            self.run(self.hook_argv("online"))
            return elapsed
        offline = _median([offline_then_online() for _ in range(reps)])
        return {"online_s": online, "offline_s": offline,
                "processes": _processes(self.bed, self.hook_argv("online"))}

    def start_argv(self):
        return [self.python, self.host_rules_path, "start"]

    def reprotect(self, reps):
        def flush_then_start():
            self.bed.ofctl("del-flows", netbed.BRIDGE)
            started = time.perf_counter()
            self.run(self.start_argv())
            return time.perf_counter() - started
        result = _median([flush_then_start() for _ in range(reps)])
        flows = len(self.bed.flows().splitlines())
        return {"seconds": result, "flows": flows,
                "processes": _processes(self.bed, self.start_argv())}

    def iperf(self, udp, seconds):
        client = ["iperf3", "-c", netbed.UPLINK_IP, "-t", str(seconds), "-J"]
        if udp:
            client += ["-u", "-l", "64", "-b", "0"]
        for attempt in range(5):
            server = subprocess.Popen(["ip", "netns", "exec", self.bed.ns("up"), "iperf3",
                                       "-s", "-1", "-B", netbed.UPLINK_IP],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(0.3)
                run = self.bed.run("g", client, check=False, timeout=seconds + 30)
            finally:
                if server.poll() is None:
                    server.kill()
                server.wait()
            if run.returncode == 0:
                end = json.loads(run.stdout)["end"]
                if udp:
                    total = end["sum"]
                    return (total["packets"] - total["lost_packets"]) / total["seconds"]
                return end["sum_received"]["bits_per_second"]
            time.sleep(0.5)
        raise RuntimeError("iperf3 failed: %s" % run.stdout[-300:])

    def forwarding(self, seconds, reps):
        return {"tcp_bps": statistics.median([self.iperf(False, seconds) for _ in range(reps)]),
                "udp64_pps": statistics.median([self.iperf(True, seconds) for _ in range(reps)])}


PEER_BRIDGE = "vrpeer"


def add_resident(bed, domids):
    """The resident VIFs: records in the state directory, patch ports on the
    bridge (their peers on a bridge of their own), and a tap device of the
    same name in dom0 for each, which takes its device filter (a patch port
    has no device; on a host each VIF's port is its device)."""
    workload.write_state(bed.state_dir, domids)
    bed.run("h", ["ip", "-batch", "-"], input="".join(
        "tuntap add dev %s mode tap\n" % workload.vif_name(domid) for domid in domids))
    bed.vsctl("--may-exist", "add-br", PEER_BRIDGE, "--", "set", "bridge", PEER_BRIDGE,
              "datapath_type=netdev")
    for start in range(0, len(domids), PORTS_PER_TRANSACTION):
        args = []
        for domid in domids[start:start + PORTS_PER_TRANSACTION]:
            name, peer = workload.vif_name(domid), "pp%d" % domid
            args += ["--", "add-port", netbed.BRIDGE, name, "--", "set", "Interface", name,
                     "type=patch", "options:peer=%s" % peer,
                     "--", "add-port", PEER_BRIDGE, peer, "--", "set", "Interface", peer,
                     "type=patch", "options:peer=%s" % name]
        bed.run("h", ["ovs-vsctl", "--timeout=300"] + args, env=bed.ovs_env(), timeout=320)


def bench(workdir, cfg, python, hook, host_rules, log=lambda message: None):
    reason = ovsbed.available()
    if reason:
        return {"skipped": reason}
    resident = cfg["fwd_vifs"]
    reps = cfg["reps"]
    result = {"resident": resident, "reps": reps}
    bed = ovsbed.OvsBed(os.path.join(workdir, "ovs-bench"), guests=[GUEST])
    os.makedirs(bed.workdir, exist_ok=True)
    with bed:
        measure = Measure(bed, python, hook, host_rules)
        measure.run(measure.start_argv())
        measure.run(measure.hook_argv("online"))
        if not bed.ping("g", netbed.UPLINK_IP):
            raise RuntimeError("the measured guest cannot reach the uplink")
        log("ovs: events with 0 resident")
        result["event_0"] = measure.event(reps)
        log("ovs: forwarding with 1 VIF's flows")
        result["forwarding_1"] = measure.forwarding(cfg["fwd_seconds"], cfg["fwd_reps"])
        add_resident(bed, workload.resident_domids(resident))
        log("ovs: re-protecting %d VIFs" % (resident + 1))
        result["reprotect"] = measure.reprotect(cfg["reprotect_reps"])
        log("ovs: events with %d resident" % resident)
        result["event_n"] = measure.event(reps)
        log("ovs: forwarding with %d VIFs' flows" % (resident + 1))
        result["forwarding_n"] = measure.forwarding(cfg["fwd_seconds"], cfg["fwd_reps"])
    one, many = result["forwarding_1"], result["forwarding_n"]
    result["ratio"] = {"tcp": many["tcp_bps"] / one["tcp_bps"],
                       "udp64": many["udp64_pps"] / one["udp64_pps"]}
    return result


def targets(result):
    if not result or "skipped" in result:
        return []
    entries = [("re-protect %d VIFs after a flush (s)" % (result["resident"] + 1),
                result["reprotect"]["seconds"]["median"], REPROTECT_LIMIT_S,
                result["reprotect"]["seconds"]["median"] <= REPROTECT_LIMIT_S)]
    for kind in ("tcp", "udp64"):
        value = result["ratio"][kind]
        entries.append(("%s forwarding, %d VIFs' flows / 1" % (kind, result["resident"] + 1),
                        value, FORWARDING_LIMIT, value >= FORWARDING_LIMIT))
    return [{"target": name, "backend": "ovs", "value": round(value, 3), "limit": limit,
             "pass": ok, "note": ""} for name, value, limit, ok in entries]


def _ms(entry):
    return "%.1f [%.1f-%.1f]" % (entry["median"] * 1e3, entry["min"] * 1e3, entry["max"] * 1e3)


def _procs(counts):
    total = sum(counts.values())
    return "%d (%s)" % (total, ", ".join("%s %d" % (k, counts[k]) for k in sorted(counts)))


def markdown(result):
    if not result:
        return ""
    lines = ["", "## Open vSwitch backend (`tests/bench/ovs_bench.py`)", ""]
    if "skipped" in result:
        return "\n".join(lines + ["Not measured: %s." % result["skipped"], ""])
    n = result["resident"]
    lines += [
        "A real Open vSwitch (own ovsdb-server and ovs-vswitchd, userspace datapath) in a "
        "namespace; the measured guest on a veth port, %d resident VIFs on patch ports. "
        "Wall times of whole processes, median [min-max] over %d runs." % (n, result["reps"]),
        "",
        "| figure | 0 resident | %d resident |" % n,
        "|---|---:|---:|",
        "| one `online` event (ms) | %s | %s |" % (_ms(result["event_0"]["online_s"]),
                                                  _ms(result["event_n"]["online_s"])),
        "| one `offline` event (ms) | %s | %s |" % (_ms(result["event_0"]["offline_s"]),
                                                   _ms(result["event_n"]["offline_s"])),
        "| processes per `online` event | %s | %s |" % (
            _procs(result["event_0"]["processes"]), _procs(result["event_n"]["processes"])),
        "",
        "| figure | value | target |",
        "|---|---:|---|",
        "| re-protect %d VIFs after `ovs-ofctl del-flows` (s) | %.2f [%.2f-%.2f] | ≤ %.1f |" % (
            n + 1, result["reprotect"]["seconds"]["median"], result["reprotect"]["seconds"]["min"],
            result["reprotect"]["seconds"]["max"], REPROTECT_LIMIT_S),
        "| flows on the bridge then | %d | |" % result["reprotect"]["flows"],
        "| processes of that re-protection | %s | |" % _procs(result["reprotect"]["processes"]),
        "| TCP guest → uplink, 1 VIF's flows (Gbit/s) | %.2f | |" % (
            result["forwarding_1"]["tcp_bps"] / 1e9),
        "| TCP, %d VIFs' flows / 1 | %.2f | ≥ %.1f |" % (n + 1, result["ratio"]["tcp"],
                                                       FORWARDING_LIMIT),
        "| 64-byte UDP packets/s, 1 VIF's flows | %.0f | |" % result["forwarding_1"]["udp64_pps"],
        "| 64-byte UDP, %d VIFs' flows / 1 | %.2f | ≥ %.1f |" % (n + 1, result["ratio"]["udp64"],
                                                               FORWARDING_LIMIT),
        ""]
    return "\n".join(lines)


if __name__ == "__main__":
    import tempfile
    quick = "--quick" in sys.argv
    cfg = {"fwd_vifs": (quick and 100) or 1000, "reps": (quick and 1) or 5,
           "reprotect_reps": (quick and 1) or 3, "fwd_seconds": (quick and 1) or 3,
           "fwd_reps": (quick and 1) or 3}
    top = os.path.dirname(os.path.dirname(HERE))
    figures = bench(tempfile.mkdtemp(prefix="vr-ovs-bench-"), cfg, sys.executable,
                    os.path.join(top, "xapi-plugin", "vif_rules.py"),
                    os.path.join(top, "host-rules", "host_rules.py"),
                    log=lambda m: sys.stderr.write(m + "\n"))
    sys.stdout.write(markdown(figures) + "\n")
    sys.stdout.write(json.dumps(targets(figures), indent=1) + "\n")
