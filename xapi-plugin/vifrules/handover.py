"""Group commit for VIF events: whoever holds the lock commits the work of
everyone waiting (as database engines do with their log).

A caller writes its change (apply or teardown of one VIF, already
validated) into STATE_DIR/queue, then waits for either the lock or its
result. The holder takes every change queued, commits them together (one
restore per family for the lot) and leaves each other caller its result in
STATE_DIR/results. A holder that dies leaves the queue as it was: the next
holder commits those changes (redo), and their callers, if still waiting,
get the result. No daemon: every caller is a short-lived hook or plugin run.
"""

import errno
import time

from vifrules import fs, jsontext
from vifrules.addresses import VifName, nic_from_state, parse_interface
from vifrules.compat import current_exception
from vifrules.errors import KINDS, LockTimeout, StateError, VifRulesError
from vifrules.lock import WAKE_SIGNAL, Lock, locked

QUEUE = "queue"
RESULTS = "results"
APPLY = "apply"
TEARDOWN = "teardown"
SYNC = "sync"


class Change(object):
    """One caller's change: APPLY of vif with its NicAddresses nic, TEARDOWN
    of vif, or SYNC of the whole host with the VIFs that run (running:
    {name: (VifName, NicAddresses or None)}) and the trusted uplinks (None:
    as in force)."""

    def __init__(self, kind, vif=None, nic=None, running=None, trusted=None):
        self.kind = kind
        self.vif = vif
        self.nic = nic
        self.running = running
        self.trusted = trusted

    def to_dict(self):
        if self.kind == SYNC:
            names = list(self.running.keys())
            names.sort()
            running = []
            for name in names:
                nic = self.running[name][1]
                if nic is not None:
                    nic = nic.to_dict()
                running.append([name, nic])
            return {"kind": SYNC, "running": running, "trusted": self.trusted}
        data = {"kind": self.kind, "vif": self.vif.name}
        if self.nic is not None:
            data["nic"] = self.nic.to_dict()
        return data


def _change_from_dict(data):
    if data["kind"] == SYNC:
        running = {}
        for name, nic in data["running"]:
            vif = VifName(name)
            if nic is not None:
                nic = nic_from_state(nic)
            running[vif.name] = (vif, nic)
        trusted = data["trusted"]
        if trusted is not None:
            trusted = [parse_interface(name) for name in trusted]
        return Change(SYNC, running=running, trusted=trusted)
    nic = None
    if "nic" in data:
        nic = nic_from_state(data["nic"])
    if data["kind"] not in (APPLY, TEARDOWN):
        raise ValueError("unknown kind")
    return Change(data["kind"], VifName(data["vif"]), nic)


def submit(config, change, make_engine):
    """Hand change over and return its result (a dict), or raise its error;
    never waits longer than the lock timeout. make_engine() gives the
    engine, called only if this caller commits: a caller whose change
    another one commits never loads it (in a storm most callers)."""
    queue = _Queue(config.state_dir)
    lock = Lock(config.lock_file, config.lock_timeout)
    if lock.try_acquire():
        # Nobody commits now: ours goes with whatever is queued, straight
        # from memory (it never needs the queue, its caller is this process).
        try:
            outcome = _commit_queued(make_engine(), queue, None, change)
        finally:
            lock.release()
        return _unpack(outcome)
    try:
        ticket = queue.put(change)
    except StateError:
        # Nothing to hand over through: alone, under the lock (a teardown
        # still removes the rules before it reports the state error).
        return locked(lock, make_engine()._one_change, change)
    deadline = time.time() + config.lock_timeout
    try:
        # Until the lock is ours, or our result is there: a holder writes
        # each result before it lets the lock go, and a caller whose change
        # is committed ends at once instead of queueing for the lock behind
        # the next holder's commit.
        holding = lock.wait(deadline, lambda: queue.has_result(ticket))
    except LockTimeout:
        # Withdrawn, or a holder has it and may still commit it: either way
        # this caller has waited as long as it may.
        outcome = queue.take_result(ticket)
        if outcome is not None:
            return _unpack(outcome)
        queue.withdraw(ticket)
        raise
    if not holding:
        outcome = queue.take_result(ticket)
    else:
        try:
            outcome = queue.take_result(ticket)
            if outcome is None:
                outcome = _commit_queued(make_engine(), queue, ticket)
        finally:
            lock.release()
    if outcome is None:
        raise StateError(queue.queue, "change %s was taken from the queue and no "
                         "result was left for it" % ticket)
    return _unpack(outcome)


def _commit_queued(engine, queue, ticket, change=None):
    """Under the lock: commit every queued change, then change (this
    caller's own, not queued: its ticket is None); return the outcome of
    ticket (None if an earlier holder already committed it)."""
    tickets, changes = queue.take_all()
    if change is not None:
        tickets.append(ticket)
        changes.append(change)
    if not tickets:
        return None
    outcomes = engine.commit_changes(changes)
    mine = None
    if len(tickets) > 1:
        queue.prune_results(2 * engine.config.lock_timeout)
    for name, outcome in zip(tickets, outcomes):
        if name == ticket:
            mine = outcome
        else:
            queue.put_result(name, outcome)
            _wake(name)
    queue.remove([name for name in tickets if name is not None])
    return mine


def in_order(changes, commit_events, commit_sync):
    """[outcome] of changes in their order, for a backend's commit_changes:
    the VIF events between two syncs through commit_events (together), each
    sync through commit_sync."""
    outcomes, events = [], []
    for change in changes + [None]:
        if change is None or change.kind == SYNC:
            if events:
                outcomes.extend(commit_events(events))
                events = []
            if change is not None:
                outcomes.append(outcome_of(commit_sync, change))
        else:
            events.append(change)
    return outcomes


def end_state(changes, previous):
    """What a group of VIF events leaves, in order (online then offline of
    one VIF ends offline): ([the result of each], {name: NicAddresses wanted
    or None}, {name: VifName}); previous: {name: the NicAddresses on record
    before or None} of every VIF of changes."""
    results, wanted, vifs = [], dict(previous), {}
    for change in changes:
        name = change.vif.name
        vifs[name] = change.vif
        if change.kind == APPLY:
            results.append({"vif": name, "replaced": wanted[name] is not None})
            wanted[name] = change.nic
        else:
            results.append({"vif": name, "was_protected": wanted[name] is not None})
            wanted[name] = None
    return results, wanted, vifs


def _unpack(outcome):
    if "error" in outcome:
        raise _error(outcome["error"], outcome.get("params", []))
    return outcome["result"]


def _error(code, params):
    for kind in KINDS:
        if kind.code == code:
            error = kind(*params)
            error.params = [str(p) for p in params]
            return error
    return VifRulesError(code, *params)


def outcome_of(function, *args):
    """{"result": ...} or {"error": code, "params": [...]} of a call."""
    try:
        return {"result": function(*args)}
    except VifRulesError:
        error = current_exception()
        return {"error": error.code, "params": list(error.params)}


class _Queue(object):
    def __init__(self, state_dir):
        self.queue = fs.join(state_dir, QUEUE)
        self.results = fs.join(state_dir, RESULTS)
        self.sequence = 0

    def put(self, change):
        # Names sort by arrival: time, then pid, then a counter.
        self.sequence += 1
        name = "%017.6f-%07d-%d" % (time.time(), fs.getpid(), self.sequence)
        _write(self.queue, name, jsontext.dumps(change.to_dict()))
        return name

    def take_all(self):
        """(tickets, changes) in arrival order; unreadable entries dropped."""
        try:
            entries = fs.listdir(self.queue)
        except OSError:
            return [], []
        names = []
        for name in entries:
            if not name.endswith(".tmp"):
                names.append(name)
            elif not _writer_alive(name):  # killed while it wrote: never queued
                _unlink(fs.join(self.queue, name))
        names.sort()
        tickets, changes = [], []
        for name in names:
            path = fs.join(self.queue, name)
            try:
                handle = open(path)
                try:
                    change = _change_from_dict(jsontext.loads(handle.read()))
                finally:
                    handle.close()
            except (IOError, ValueError, KeyError, TypeError, VifRulesError):
                _unlink(path)  # written by no caller of ours: never committed
                continue
            tickets.append(name)
            changes.append(change)
        return tickets, changes

    def remove(self, tickets):
        for name in tickets:
            _unlink(fs.join(self.queue, name))

    def withdraw(self, ticket):
        """True if ticket was still queued (now it is not)."""
        try:
            fs.unlink(fs.join(self.queue, ticket))
            return True
        except OSError:
            return False

    def prune_results(self, seconds):
        """Results nobody came for (their callers gave up or died)."""
        try:
            names = fs.listdir(self.results)
        except OSError:
            return
        oldest = time.time() - seconds
        for name in names:
            path = fs.join(self.results, name)
            try:
                if fs.mtime(path) < oldest:
                    fs.unlink(path)
            except OSError:
                pass

    def put_result(self, ticket, outcome):
        _write(self.results, ticket, jsontext.dumps(outcome))

    def has_result(self, ticket):
        return fs.exists(fs.join(self.results, ticket))

    def take_result(self, ticket):
        path = fs.join(self.results, ticket)
        try:
            handle = open(path)
        except IOError:
            return None
        try:
            text = handle.read()
        finally:
            handle.close()
        _unlink(path)
        try:
            return jsontext.loads(text)
        except ValueError:
            return {"error": StateError.code, "params": [path, "unreadable result"]}


def _pid(name):
    """The pid in a ticket's name (time-pid-counter), or None."""
    try:
        return int(name.split("-")[1])
    except (IndexError, ValueError):
        return None


def _writer_alive(name):
    """Whether the process whose ticket name is lives."""
    pid = _pid(name)
    if pid is None:
        return False
    try:
        fs.kill(pid, 0)
    except OSError:
        return getattr(current_exception(), "errno", None) == errno.EPERM
    return True


def _wake(ticket):
    """Tell the caller of ticket, blocked in Lock.wait, that its result is there."""
    pid = _pid(ticket)
    if pid is not None and pid > 1 and pid != fs.getpid():
        try:
            fs.kill(pid, WAKE_SIGNAL)
        except OSError:  # gone: it needs no result any more
            pass


def _write(directory, name, text):
    path = fs.join(directory, name)
    try:
        if not fs.isdir(directory):
            fs.makedirs(directory)
        handle = open(path + ".tmp", "w")
        try:
            handle.write(text)
        finally:
            handle.close()
        fs.rename(path + ".tmp", path)
    except (IOError, OSError):
        raise StateError(path, "cannot write: %s" % current_exception())


def _unlink(path):
    try:
        fs.unlink(path)
    except OSError:
        pass
