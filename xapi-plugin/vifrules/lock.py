"""The host's lock: an exclusive flock on one file, taken around every
change of rules, and inherited by the commands run under it (vifrules.runner
keeps the descriptors in inherited open across exec): a caller killed
mid-commit leaves the lock held until its children end.

On the vif event path: no os here (vifrules.fs says why).
"""

import errno
import fcntl
import time

try:  # Python 3: the C module; 'signal' itself imports enum, a vif event's cost
    import _signal as signal
except ImportError:
    import signal

from vifrules import fs
from vifrules.compat import current_exception
from vifrules.errors import LockTimeout

# The holder wakes a caller whose result it has written with this signal
# (the pid is in the caller's ticket): a waiter costs no CPU until then.
# Its default action is to ignore it, so a signal that comes late, or to a
# pid that is no longer the waiter's, harms nobody.
WAKE_SIGNAL = signal.SIGURG
# Besides, a waiter looks for its result this often (a holder killed
# between writing a result and waking its caller).
WAIT_TICK = 0.05

# Descriptors every child keeps open across exec: the lock while it is held.
inherited = []


def set_cloexec(fd):
    flags = fcntl.fcntl(fd, fcntl.F_GETFD)
    fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)


class Lock(object):
    """An exclusive flock on one file, taken around every change of rules."""

    def __init__(self, path, timeout):
        self.path = path
        self.timeout = timeout
        self.handle = None

    def _open(self):
        directory = fs.dirname(self.path)
        if directory and not fs.isdir(directory):
            fs.makedirs(directory)
        self.handle = open(self.path, "a")
        set_cloexec(self.handle.fileno())

    def try_acquire(self):
        """Take the lock if it is free now; False (and nothing held) if not."""
        self._open()
        try:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except IOError:
            self.handle.close()
            self.handle = None
            return False
        inherited.append(self.handle.fileno())
        return True

    def acquire(self):
        deadline = time.time() + self.timeout
        while not self.try_acquire():
            if time.time() >= deadline:
                raise LockTimeout(self.path, str(self.timeout))
            time.sleep(0.02)

    def wait(self, deadline, done=None):
        """Block until the lock is ours (True), or until done() says the
        caller needs it no more (False), or until time.time() reaches
        deadline (LockTimeout). No polling of the lock: the kernel hands it
        over the moment it is free, and waiters cost no CPU while a holder
        commits. WAKE_SIGNAL interrupts flock to ask done(), and so does an
        interval timer every WAIT_TICK seconds (where there is none, Python
        2.4, only the deadline interrupts it); an interruption that raises
        ends the call, one that returns lets flock block again."""
        self._open()
        ticks = _Ticks(deadline, done)
        previous = signal.signal(signal.SIGALRM, ticks.tick)
        previous_wake = signal.signal(WAKE_SIGNAL, ticks.tick)
        try:
            try:
                ticks.tick(None, None)  # past the deadline or done already
                if done is not None and hasattr(signal, "setitimer"):
                    signal.setitimer(signal.ITIMER_REAL, WAIT_TICK, WAIT_TICK)
                else:
                    _set_alarm(deadline - time.time())
                while 1:
                    try:
                        fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX)
                        break
                    except IOError:  # Python 2: a tick that returned interrupts flock
                        if getattr(current_exception(), "errno", None) != errno.EINTR:
                            raise
                ticks.active = False
            except _Alarm:
                self.handle.close()
                self.handle = None
                raise LockTimeout(self.path, str(self.timeout))
            except _Done:
                self.handle.close()
                self.handle = None
                return False
        finally:
            ticks.active = False
            _set_alarm(0)
            signal.signal(WAKE_SIGNAL, previous_wake)
            signal.signal(signal.SIGALRM, previous)
        inherited.append(self.handle.fileno())
        return True

    def release(self):
        # Closing, not LOCK_UN: a child still holding the descriptor keeps
        # the lock until it ends (LOCK_UN would free it for everyone).
        if self.handle is not None:
            fd = self.handle.fileno()
            if fd in inherited:
                inherited.remove(fd)
            self.handle.close()
            self.handle = None


class _Alarm(Exception):
    pass


class _Done(Exception):
    pass


class _Ticks(object):
    """SIGALRM or WAKE_SIGNAL while Lock.wait blocks: past the deadline or
    done, raise."""

    def __init__(self, deadline, done):
        self.deadline = deadline
        self.done = done
        self.active = True

    def tick(self, number, frame):
        # Raises once at most: a tick that comes after the lock was taken,
        # or after one that raised, does nothing.
        if not self.active:
            return
        if time.time() >= self.deadline:
            self.active = False
            raise _Alarm()
        if self.done is not None and self.done():
            self.active = False
            raise _Done()


def _set_alarm(seconds):
    if hasattr(signal, "setitimer"):  # Python 2.6+
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0))
    else:
        signal.alarm(int(seconds + 0.999))


def locked(lock, function, *args):
    """Call function(*args) holding lock (no 'with' before Python 2.5)."""
    lock.acquire()
    try:
        return function(*args)
    finally:
        lock.release()
