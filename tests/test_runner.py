"""The command runner of the dom0 code, run by each dom0 interpreter: fork and
exec with pipes (no subprocess module, no shell), several commands at once."""

import os
import subprocess

import pytest

from test_lifecycle import PYTHONS

LIBRARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "xapi-plugin")

# Runs inside the interpreter under test; prints one line per check.
PROBE = r'''
import os, sys
from vifrules.runner import run, run_all
from vifrules.errors import CommandFailed
big = "x" * 300000
status, out, err = run(["cat"], big)
print("cat %s" % (status == 0 and out == big))
status, out, err = run(["sh", "-c", "cat >&2; echo done"], big, check=False)
print("stderr %s" % (status == 0 and err == big and out == "done\n"))
status, out, err = run(["no-such-tool-vr"], check=False)
print("missing %s" % (status == 127 and "no-such-tool-vr" in err))
try:
    run(["sh", "-c", "echo why >&2; exit 3"])
    print("raised False")
except CommandFailed:
    print("raised %s" % ("why" in str(sys.exc_info()[1])))
lock = open(os.path.join(sys.argv[1], "lock"), "a")
fds = run(["ls", "/proc/self/fd"])[1].split()
print("fds %s" % (sorted(fds) == ["0", "1", "2", "3"]))
# Each waits (bounded) for the other's file: only commands run at once pass.
wait = "touch %s/$0; i=0; while [ ! -e %s/$1 ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; [ -e %s/$1 ]"
wait = wait % (sys.argv[1], sys.argv[1], sys.argv[1])
results = run_all([(["sh", "-c", wait, "a", "b"], None), (["sh", "-c", wait, "b", "a"], None)],
                  check=False)
print("parallel %s" % ([r[0] for r in results] == [0, 0]))
import time
from vifrules.errors import CommandTimeout
from vifrules.lock import Lock
from vifrules.runner import TIMED_OUT
started = time.time()
try:
    run(["sleep", "5"], timeout=0.5)
    print("timeout False")
except CommandTimeout:
    print("timeout %s" % (time.time() - started < 2))
status = run(["sleep", "5"], check=False, timeout=0.3)[0]
print("timeout-status %s" % (status == TIMED_OUT))
lock = Lock(os.path.join(sys.argv[1], "the-lock"), 5)
lock.acquire()
held = run(["sh", "-c", "ls -l /proc/$$/fd"])[1]
print("inherits-lock %s" % ("the-lock" in held))
lock.release()
free = run(["sh", "-c", "ls -l /proc/$$/fd"])[1]
print("released %s" % ("the-lock" not in free))
# A child that outlives its caller keeps the lock until it ends.
lock.acquire()
pid = os.fork()
if pid == 0:
    run_all([(["sleep", "1"], None)])
    os._exit(0)
time.sleep(0.2)
os.kill(pid, 9)
os.waitpid(pid, 0)
lock.release()
other = Lock(os.path.join(sys.argv[1], "the-lock"), 0.3)
try:
    other.acquire()
    print("orphan-holds False")
except Exception:
    print("orphan-holds True")
time.sleep(1.2)
other = Lock(os.path.join(sys.argv[1], "the-lock"), 1)
other.acquire()
print("then-free True")
other.release()
# wait(): blocks (no polling) until the lock is free or the deadline passes
import fcntl
holder = open(os.path.join(sys.argv[1], "the-lock"), "a")
fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
pid = os.fork()
if pid == 0:
    holder.close()
    waiter = Lock(os.path.join(sys.argv[1], "the-lock"), 0.3)
    started = time.time()
    try:
        waiter.wait(time.time() + 0.3)
        os._exit(1)
    except Exception:
        if not 0.25 < time.time() - started < 1:
            os._exit(2)
    waiter.wait(time.time() + 5)
    os._exit(0)
time.sleep(0.8)
holder.close()
print("wait %s" % (os.waitpid(pid, 0)[1] == 0))
# wait(deadline, done): while the lock stays held, done() ends the wait
# (False, nothing held) within a few ticks; ticks after that never raise.
holder = open(os.path.join(sys.argv[1], "the-lock"), "a")
fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
pid = os.fork()
if pid == 0:
    holder.close()
    late = 0
    for attempt in range(20):
        flag = os.path.join(sys.argv[1], "done-%d" % attempt)
        waiter = Lock(os.path.join(sys.argv[1], "the-lock"), 5)
        due = time.time() + 0.03
        def done():
            if time.time() >= due:
                open(flag, "w").close()
            return os.path.exists(flag)
        if waiter.wait(time.time() + 5, done) is not False or waiter.handle is not None:
            os._exit(3)
        late = max(late, time.time() - due)
        time.sleep(0.02)  # a stray tick would raise here
    if late > 0.5:
        os._exit(4)
    os._exit(0)
status = os.waitpid(pid, 0)[1]
holder.close()
print("wait-done %s" % (status == 0))
'''


@pytest.mark.parametrize("version", sorted(PYTHONS))
def test_runner_under_each_dom0_python(version, tmp_path):
    python = PYTHONS[version]
    if not os.path.exists(python):
        pytest.skip("%s is not installed at %s" % (version, python))
    env = dict(os.environ, PYTHONPATH=LIBRARY)
    probe = subprocess.run([python, "-c", PROBE, str(tmp_path)], env=env, timeout=60,
                           capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.split("\n")[:-1]
    assert [line.split()[0] for line in lines] == [
        "cat", "stderr", "missing", "raised", "fds", "parallel", "timeout", "timeout-status",
        "inherits-lock", "released", "orphan-holds", "then-free", "wait", "wait-done"]
    assert all(line.endswith(" True") for line in lines), lines
