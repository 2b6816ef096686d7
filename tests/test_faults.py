"""Interrupted anything converges (issue 11).

For apply, re-apply (addresses added and removed, IPv6 added and dropped),
teardown, start, stop and sync, a fault at every step: each tool call
failing (the Nth call of each tool), each tool failing always, printing
garbage and exiting 0, or slower than its caller's death, and SIGKILL of
the caller at 50 points spread over each operation. After each fault:

- every table (one version per family and table, since each commits at
  once) equals its version before, after, or (for a VIF) without the VIF:
  the guest has no more access than the union of before and after, and no
  other VIF is touched; a host operation may also leave a table closed;
- a success is never reported unless the kernel holds the result;
- on a sample, a spoofed frame from the guest never reaches the uplink;
- the same operation, repeated cleanly, ends byte-identical (every family's
  dump, and the records) to the same state built cleanly in a fresh bed.

One bed per group of operations, brought from state to state by the
product itself (each operation's result is the next one's starting
state); the groups run side by side in threads.
"""

import concurrent.futures
import difflib
import json
import os
import time

import faults
import netbed
from xapi_standin.server import XapiStandin

G1, G2, G3 = netbed.GUESTS
# VIFs with no port in the bed that share vif1.0's dispatch paths: domid 1
# (another device) and a domid starting with 1.
EXTRA = [("vif1.1", "02:00:00:00:01:01", "198.51.100.11"),
         ("vif12.0", "02:00:00:00:01:12", "198.51.100.12")]
NET_A = G1.network(ipv4=["192.0.2.11", "192.0.2.21"], ipv6=[])
NET_B = G1.network(ipv4=["192.0.2.11", "192.0.2.31"], ipv6=["2001:db8::11", "2001:db8::21"])
KILL_POINTS = 50
DOCUMENTED = (0, 2, 3, 4, 5, 6, 7, 8, 9, 10)
SLOW = "0.5"  # seconds a slow tool sleeps before it runs (the caller dies first)
SPOOF_SAMPLE = 25  # every Nth trial of a group sends a spoofed frame


def _extra_network(mac, ip):
    return json.dumps({"mac": mac, "ips": [{"ip": ip, "netmask": "255.255.255.0",
                                             "enabled": "1"}]})


class Op(object):
    """One product operation from state before to state after."""

    def __init__(self, name, kind, args, before, after, host=False, prepare=None):
        self.name, self.kind, self.args = name, kind, list(args)
        self.before, self.after, self.host = before, after, host
        self.prepare = prepare  # sets the stand-in XAPI up for the operation


# The rebuild from the records that start (and sync) do.
REBUILD = Op("start", "host-rules", ["start"], None, None, host=True)


class Snapshot(object):
    """Every family's dump (per table) and the records."""

    def __init__(self, bed):
        self.tables = faults.tables(bed)
        self.files = faults.state_files(bed)


# ---------------------------------------------------------------- groups

def _vif_setup(bed):
    bed.host_rules("start")
    for guest in (G2, G3):
        bed.hook("online", guest.port, "--network", guest.network())
    for name, mac, ip in EXTRA:
        bed.hook("online", name, "--network", _extra_network(mac, ip))


class VifGroup(object):
    """vif1.0 absent, with NET_A (IPv4 only) or NET_B (other IPv4, IPv6),
    among four other VIFs; no-access version: the VIF absent."""
    name = "vif"
    guest = G1
    start = "absent"
    no_access = "absent"
    # each operation's result is the next one's starting state
    ring = [
        Op("apply", "hook", ["online", "vif1.0", "--network", NET_B], "absent", "B"),
        Op("re-apply dropping IPv6", "hook", ["online", "vif1.0", "--network", NET_A], "B", "A"),
        Op("teardown", "hook", ["offline", "vif1.0"], "A", "absent"),
        Op("apply", "hook", ["online", "vif1.0", "--network", NET_A], "absent", "A"),
        Op("re-apply adding IPv6", "hook", ["online", "vif1.0", "--network", NET_B], "A", "B"),
        Op("teardown", "hook", ["offline", "vif1.0"], "B", "absent"),
    ]

    def __init__(self, workdir):
        self.workdir = workdir

    def setup(self, bed):
        _vif_setup(bed)

    def references(self, bed):
        _vif_setup(bed)
        refs = {"absent": Snapshot(bed)}
        bed.hook("online", G1.port, "--network", NET_A)
        refs["A"] = Snapshot(bed)
        bed.hook("offline", G1.port)
        bed.hook("online", G1.port, "--network", NET_B)
        refs["B"] = Snapshot(bed)
        return refs

    def close(self):
        pass


class HostGroup(VifGroup):
    """Every VIF protected, then the host stopped and started again."""
    name = "host"
    guest = None  # stopped means open: no frame check
    start = "started"
    no_access = None
    ring = [Op("stop", "host-rules", ["stop"], "started", "stopped", host=True),
            Op("start", "host-rules", ["start"], "stopped", "started", host=True)]

    def setup(self, bed):
        _vif_setup(bed)
        bed.hook("online", G1.port, "--network", NET_B)

    def references(self, bed):
        self.setup(bed)
        refs = {"started": Snapshot(bed)}
        bed.host_rules("stop")
        refs["stopped"] = Snapshot(bed)
        return refs


class SyncGroup(VifGroup):
    """sync against the stand-in XAPI: vif2.0's VM goes away and comes back."""
    name = "sync"
    guest = G2
    start = "full"
    no_access = None

    def __init__(self, workdir):
        VifGroup.__init__(self, workdir)
        self.xs = None
        self.ring = [
            Op("sync (a VM gone)", "host-rules", ["sync"], "full", "without-vif2.0",
               host=True, prepare=lambda: self.vm2(False)),
            Op("sync (a VM back)", "host-rules", ["sync"], "without-vif2.0", "full",
               host=True, prepare=lambda: self.vm2(True)),
        ]

    def vm2(self, running):
        if running and self.vm is None:
            self.vm = self.xs.add_vm("g2", resident_on=self.host, domid=2, xenstore_data={
                "vm-data/networking/" + G2.mac.replace(":", ""): G2.network()})
            self.xs.add_vif(self.vm, "0", G2.mac)
        elif not running and self.vm is not None:
            self.xs.remove_vm(self.vm)
            self.vm = None

    def setup(self, bed):
        self.xs = XapiStandin(password="s3cret")
        self.xs.start()
        self.host = self.xs.add_host("host1")
        for guest in (G1, G3):
            vm = self.xs.add_vm(guest.short, resident_on=self.host,
                                domid=int(guest.port[3:].split(".")[0]), xenstore_data={
                                    "vm-data/networking/" + guest.mac.replace(":", ""):
                                    guest.network()})
            self.xs.add_vif(vm, "0", guest.mac)
        self.vm = None
        self.vm2(True)
        self.xapi_config = {"XENSOURCE_INVENTORY": self.xs.inventory_path(self.host),
                            "XAPI_SOCKET": self.xs.socket_path}
        bed.write_config(**dict(self.xapi_config, **bed.extra_config))
        bed.host_rules("start")
        bed.host_rules("sync")

    def references(self, bed):
        # built by events, not by sync: a sync must end where events do
        bed.host_rules("start")
        for guest in (G1, G3):
            bed.hook("online", guest.port, "--network", guest.network())
        refs = {"without-vif2.0": Snapshot(bed)}
        bed.hook("online", G2.port, "--network", G2.network())
        refs["full"] = Snapshot(bed)
        return refs

    def close(self):
        if self.xs is not None:
            self.xs.stop()


GROUPS = [VifGroup, HostGroup, SyncGroup]


# ---------------------------------------------------------------- a site

class Site(object):
    """A group's fault bed (tools wrapped), its references from a fresh
    bed, the state it is in, and what went wrong."""

    def __init__(self, group_class, workdir):
        self.group = group_class(workdir)
        self.faults = faults.ToolFaults()
        self.beds = []
        self.failures = []
        self.trials = self.kills_landed = self.frame_checks = self.kinds = 0
        self.lies_left_to_rebuild = []
        self.durations = {}
        os.makedirs(workdir)
        self.log = open(os.path.join(workdir, "trials.log"), "w")
        self.began = time.time()
        try:
            self.refs = self.group.references(self._fresh_bed("reference", wrapped=False))
            self.bed = self._fresh_bed("faults", wrapped=True)
            self.group.setup(self.bed)
            self.state = self.group.start
            self._check(self.state, "the setup")
        except BaseException:
            self.close()
            raise

    def _fresh_bed(self, label, wrapped):
        bed = netbed.NetBed(os.path.join(self.group.workdir, label))
        os.makedirs(bed.workdir)
        self.beds.append(bed)
        bed.create()
        bed.extra_config = wrapped and self.faults.config() or {}
        bed.write_config(**bed.extra_config)
        return bed

    def close(self):
        self.group.close()
        for bed in self.beds:
            bed.destroy()
        self.faults.destroy()
        self.log.close()

    def fail(self, text):
        self.failures.append("[%s] %s" % (self.group.name, text))

    # ------------------------------------------------------------ running

    def run_clean(self, op):
        """Run op without faults; its duration is the latest measure of it."""
        self.faults.clear()
        if op.prepare:
            op.prepare()
        seconds, status, out, err = faults.timed_run(self.bed, op.kind, op.args)
        self.durations[id(op)] = seconds
        if status != 0:
            raise AssertionError("[%s] clean %s failed (%d): %s" % (
                self.group.name, op.name, status, err))
        return seconds

    def _check(self, state, after_what):
        """The bed is byte-identical to the reference of state; else a
        failure (and an exception: later trials would mean nothing)."""
        ref = self.refs[state]
        now = faults.tables(self.bed)
        files = faults.state_files(self.bed)
        if now != ref.tables or files != ref.files:
            diff = "\n".join(list(difflib.unified_diff(
                _text(ref.tables).splitlines(), _text(now).splitlines(), "clean", "after",
                lineterm=""))[:40])
            self.fail("after %s: not byte-identical to a clean %r:\n%s\nrecords: %s" % (
                after_what, state, diff, _files_diff(ref.files, files)))
            raise Diverged()
        self.state = state

    def goto(self, state):
        if self.state == state:
            return
        for op in self.group.ring:
            if op.before == self.state and op.after == state:
                self.run_clean(op)
                self._check(state, "clean %s" % op.name)
                return
        raise AssertionError("no operation from %s to %s" % (self.state, state))

    # ------------------------------------------------------------ a trial

    def trial(self, op, what, faulty):
        """Run faulty() from op.before; check the union, then converge."""
        self.goto(op.before)
        self.trials += 1
        if op.prepare:
            op.prepare()
        status, out, err, lying = faulty()
        self.faults.clear()
        faults.wait_unlocked(self.bed)
        label = "%s, %s" % (op.name, what)
        self.log.write("%.3f %s exit %d\n" % (time.time() - self.began, label, status))
        self.log.flush()
        if "Traceback" in err or (status not in DOCUMENTED and status != -9):
            self.fail("%s: exit %d, %s" % (label, status, err.strip()[-500:]))
        now = faults.tables(self.bed)
        versions = [self.refs[op.before].tables, self.refs[op.after].tables]
        if self.group.no_access:
            versions.append(self.refs[self.group.no_access].tables)
        bad = faults.outside_union(now, versions, op.host)
        if bad:
            self.fail("%s: %s in none of the allowed versions:\n%s" % (
                label, ", ".join(bad), "\n".join(now.get(k) or "(absent)" for k in bad)))
        if status == 0 and not lying and now != self.refs[op.after].tables:
            self.fail("%s: exit 0 but the kernel does not hold the result" % label)
        if self.group.guest is not None and self.trials % SPOOF_SAMPLE == 0:
            self.frame_checks += 1
            if faults.spoof_passes(self.bed, self.group.guest):
                self.fail("%s: a spoofed frame from %s reached the uplink" % (
                    label, self.group.guest.port))
        self.run_clean(op)
        if lying and faults.tables(self.bed) != self.refs[op.after].tables:
            # A tool that exits 0 without committing is not seen by an event
            # computed from the records; a rebuild from them (start, sync) is.
            self.lies_left_to_rebuild.append(label)
            status = self.bed.host_rules("status", check=False)
            if status.returncode == 0 or "NOT protected" not in status.stdout:
                self.fail("%s: the kernel holds what no record wants, yet status says "
                          "protected: %s" % (label, status.stdout.strip()))
            self.run_clean(REBUILD)
        self._check(op.after, "%s, then a clean %s" % (label, op.name))

    def kill_trial(self, op, offset):
        def faulty():
            status, out, err = faults.killed_run(self.bed, op.kind, op.args, offset)
            if status == -9:
                self.kills_landed += 1
            return status, out, err, False
        self.trial(op, "SIGKILL at %.3fs" % offset, faulty)

    def tool_trial(self, op, key, mode):
        def faulty():
            self.faults.set(key, mode)
            if not mode.startswith("slow"):
                status, out, err = faults.timed_run(self.bed, op.kind, op.args)[1:]
                lying = mode == "garbage" and (key in faults.RESTORE_KEYS or key == "ARPTABLES")
                return status, out, err, lying
            run = faults.Run(self.bed, op.kind, op.args)
            deadline = time.time() + 10
            while not self.faults.started(key) and run.process.poll() is None \
                    and time.time() < deadline:
                time.sleep(0.002)
            run.kill()  # the tool has not run yet: it runs after the caller's death
            status, out, err = run.finish()
            return status, out, err, False
        self.trial(op, "%s %s" % (key, mode), faulty)


def _text(tables):
    return "".join("## %s\n%s" % (key, tables[key]) for key in sorted(tables))


def _kind(op):
    """apply, re-apply, teardown, start, stop or sync."""
    return op.name.split()[0]


class Diverged(Exception):
    pass


def _files_diff(want, got):
    keys = sorted(set(want) | set(got))
    return ", ".join("%s: %r != %r" % (k, want.get(k), got.get(k))
                     for k in keys if want.get(k) != got.get(k)) or "same"


def _run_groups(tmp_path, body):
    """body(site) for each group, side by side; every failure reported."""
    def one(group_class):
        site = Site(group_class, str(tmp_path / group_class.name))
        try:
            try:
                body(site)
            except Diverged:
                pass
            return site.failures, (group_class.name, site.trials, site.kills_landed,
                                   site.frame_checks, site.kinds, site.lies_left_to_rebuild)
        finally:
            site.close()

    with concurrent.futures.ThreadPoolExecutor(len(GROUPS)) as pool:
        results = list(pool.map(one, GROUPS))
    failures = [f for result in results for f in result[0]]
    summary = [result[1] for result in results]
    print("group, trials, kills that landed, frame checks, kinds, "
          "lying tools only a rebuild repaired: %s" % summary)
    assert not failures, "%d failure(s):\n%s" % (len(failures), "\n\n".join(failures[:8]))
    return summary


# ---------------------------------------------------------------- the proofs

def test_sigkill_at_50_points_of_every_operation_converges(tmp_path, require_netns):
    """Each kind of operation is killed at KILL_POINTS offsets spread evenly
    over its duration (as its last clean run measured it; two operations of
    the same kind share the points)."""
    def body(site):
        ring = site.group.ring
        kinds = {}
        for op in ring:
            kinds.setdefault(_kind(op), []).append(op)
        for op in ring:  # a clean run of each measures it
            site.goto(op.before)
            site.durations[id(op)] = site.run_clean(op)
            site._check(op.after, "clean %s" % op.name)
        rounds = KILL_POINTS // max(len(v) for v in kinds.values())
        site.kinds = len(kinds)
        for i in range(rounds):
            for op in ring:
                share = kinds[_kind(op)]
                point = i * len(share) + share.index(op)
                site.kill_trial(op, point * site.durations[id(op)] / KILL_POINTS)

    summary = _run_groups(tmp_path, body)
    for name, trials, landed, frames, kinds, lies in summary:
        assert trials >= kinds * KILL_POINTS
        assert landed >= trials * 0.6, "most kills must land before the operation ends"


def test_a_fault_at_every_tool_step_converges(tmp_path, require_netns):
    """Each call an operation makes fails in turn (the Nth call of its tool);
    each tool it calls fails always, prints garbage and exits 0, and runs
    slower than its caller's death."""
    def body(site):
        plans = []
        for op in site.group.ring:
            site.goto(op.before)
            site.faults.reset_log()
            site.run_clean(op)
            site._check(op.after, "clean %s" % op.name)
            steps = site.faults.calls()
            assert steps, "%s ran no tool" % op.name
            plan, seen = [], {}
            for key in steps:
                seen[key] = seen.get(key, 0) + 1
                plan.append((key, "nth:%d" % seen[key]))
            for key in sorted(seen):
                if seen[key] > 1:  # else the same as failing its first call
                    plan.append((key, "fail"))
                plan.append((key, "garbage"))
                if not key.endswith("_SAVE"):  # a dump nobody reads commits nothing
                    plan.append((key, "slow:" + SLOW))
            plans.append((op, plan))
        # round robin over the ring: each trial ends where the next begins
        while [plan for op, plan in plans if plan]:
            for op, plan in plans:
                if plan:
                    key, mode = plan.pop(0)
                    site.tool_trial(op, key, mode)

    _run_groups(tmp_path, body)


def test_no_command_commits_after_its_callers_lock_is_gone(legacy_bed):
    """A restore slower than its caller's death: the hook is killed
    mid-commit, an offline of the same VIF follows at once; the offline
    waits for the orphan and ends with nothing of the VIF in any family."""
    bed = legacy_bed
    tools = faults.ToolFaults()
    try:
        bed.write_config(**tools.config())
        bed.protect_all()
        bed.hook("offline", G1.port)
        for key in faults.RESTORE_KEYS:
            tools.set(key, "slow:1.5")
            run = faults.Run(bed, "hook", ["online", G1.port, "--network", NET_B])
            deadline = time.time() + 10
            while not tools.started(key) and time.time() < deadline:
                time.sleep(0.002)
            assert tools.started(key)
            run.kill()
            assert run.finish()[0] == -9
            tools.clear()  # the orphan sleeps on
            started = time.time()
            bed.hook("offline", G1.port)
            waited = time.time() - started
            assert waited > 1.0, "offline ran while the orphan of %s held no lock" % key
            time.sleep(0.3)  # nothing may come after
            assert G1.port not in bed.ruleset(), key
            assert not faults.state_files(bed).get("pending/" + G1.port)
    finally:
        tools.destroy()
