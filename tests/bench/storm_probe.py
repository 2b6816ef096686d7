"""The vif hook with timers around the group-commit steps, for the storm
benchmark's profiling run only (never its timed run).

    python -S storm_probe.py online|offline VIF [--network JSON]

Runs the real hook (vifrules.cli.hook_main of the tree in $VR_STORM_TREE)
and appends one JSON line to $VR_STORM_PROBE_OUT when it ends: when the
process started its Python code, how often it looked at the lock and slept,
and for every commit it made as the lock holder when it took and left the
lock, the group's size, the CPU seconds it cost (with its tools), and the
seconds spent reading the records, saving, parsing dumps, rendering and
restoring. Runs under every interpreter the
benchmark measures (2.7 and 3.6 up): plain Python, no 'with'.
"""

import json
import os
import resource
import sys
import time

_started = time.time()
sys.path.insert(0, os.environ["VR_STORM_TREE"])

from vifrules import cli, engine, handover, lock  # noqa: E402

RECORD = {"pid": os.getpid(), "python_start": _started, "lock_tries": 0,
          "lock_busy": 0, "sleeps": 0, "sleep_seconds": 0.0, "commits": [],
          "single": 0}
_current = []  # the commit being made (a dict), while this process holds the lock
_real_sleep = time.sleep
_real_time = time.time


def _timed(owner, name, key):
    """Wrap owner.name so that its run time adds to the current commit's key."""
    function = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = _real_time()
        try:
            return function(*args, **kwargs)
        finally:
            if _current:
                _current[-1][key] = _current[-1].get(key, 0.0) + _real_time() - start
    setattr(owner, name, wrapper)


class _Clock(object):
    """handover's view of the time module: sleeps counted."""

    def time(self):
        return _real_time()

    def sleep(self, seconds):
        RECORD["sleeps"] += 1
        start = _real_time()
        _real_sleep(seconds)
        RECORD["sleep_seconds"] += _real_time() - start


handover.time = _Clock()
_real_acquire = lock.Lock.acquire
_real_try_acquire = lock.Lock.try_acquire
_real_wait = lock.Lock.wait
_real_release = lock.Lock.release
_real_commit_queued = handover._commit_queued
_real_take_all = handover._Queue.take_all


def _cpu():
    """CPU seconds of this process and the children it has waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _acquire(self):
    RECORD["lock_tries"] += 1
    try:
        _real_acquire(self)
    except Exception:
        RECORD["lock_busy"] += 1
        raise
    _current.append({"acquired": _real_time(), "cpu": _cpu()})


def _try_acquire(self):
    # The first look at the lock: free, this caller commits at once.
    RECORD["lock_tries"] += 1
    if _real_try_acquire(self):
        _current.append({"acquired": _real_time(), "cpu": _cpu()})
        return True
    RECORD["lock_busy"] += 1
    return False


def _wait(self, deadline, done=None):
    # Blocked in flock until the lock is ours or the result is there.
    start = _real_time()
    RECORD["sleeps"] += 1
    try:
        holding = _real_wait(self, deadline, done)
    finally:
        RECORD["sleep_seconds"] += _real_time() - start
    if holding:
        _current.append({"acquired": _real_time(), "cpu": _cpu()})
    return holding


def _release(self):
    _real_release(self)
    if _current and "released" not in _current[-1]:
        _current[-1]["released"] = _real_time()
        _current[-1]["cpu"] = _cpu() - _current[-1]["cpu"]
        RECORD["commits"].append(_current.pop())


def _take_all(self):
    tickets, changes = _real_take_all(self)
    if _current:
        _current[-1]["group"] = len(tickets)
    return tickets, changes


def _commit_queued(*args):
    start = _real_time()
    try:
        return _real_commit_queued(*args)
    finally:
        if _current:
            _current[-1]["commit_seconds"] = _real_time() - start


def _one_change(self, change):
    RECORD["single"] += 1
    return _real_one_change(self, change)


lock.Lock.acquire = _acquire
lock.Lock.try_acquire = _try_acquire
lock.Lock.wait = _wait
lock.Lock.release = _release
handover._commit_queued = _commit_queued
handover._Queue.take_all = _take_all
_real_one_change = engine.Engine._one_change
engine.Engine._one_change = _one_change
_timed(engine.Engine, "_wanted", "read_records")
_timed(engine.Engine, "_save_families", "save")
_timed(engine, "_parse_dump", "parse")
_timed(engine.Engine, "_desired_table", "render_tables")
_timed(engine, "restore_text", "restore_text")
_timed(engine.Engine, "_restore_families", "restore")


def main():
    status = cli.hook_main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    RECORD["end"] = _real_time()
    RECORD["status"] = status
    RECORD["vif"] = sys.argv[2:3] and sys.argv[2] or ""
    handle = open(os.environ["VR_STORM_PROBE_OUT"], "a")
    try:
        handle.write(json.dumps(RECORD) + "\n")
    finally:
        handle.close()
    os._exit(status)


if __name__ == "__main__":
    main()
