"""The one layer that runs commands: argv lists, never a shell; and the lock."""

import fcntl
import os
import subprocess
import time

from vifrules.compat import current_exception, to_bytes, to_text
from vifrules.errors import CommandFailed, LockTimeout

# udev and init scripts may start us with a bare PATH; the tools live in sbin.
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STDERR_LIMIT = 2000


def _environment():
    env = dict(os.environ)
    path = env.get("PATH", "")
    env["PATH"] = path and (path + ":" + SEARCH_PATH) or SEARCH_PATH
    env["LC_ALL"] = "C"
    return env


def run(argv, stdin_text=None, check=True):
    """Run argv; return (status, stdout, stderr) as text.

    A command that cannot be started counts as failed with status 127.
    """
    argv = [str(a) for a in argv]
    try:
        process = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   close_fds=True, env=_environment())
    except OSError:
        error = str(current_exception())
        if check:
            raise CommandFailed(" ".join(argv), "127", error)
        return 127, "", error
    data = None
    if stdin_text is not None:
        data = to_bytes(stdin_text)
    out, err = process.communicate(data)
    out, err = to_text(out), to_text(err)
    if check and process.returncode != 0:
        raise CommandFailed(" ".join(argv), str(process.returncode),
                            err.strip()[-STDERR_LIMIT:])
    return process.returncode, out, err


class Lock(object):
    """An exclusive flock on one file, taken around every change of rules."""

    def __init__(self, path, timeout):
        self.path = path
        self.timeout = timeout
        self.handle = None

    def acquire(self):
        directory = os.path.dirname(self.path)
        if directory and not os.path.isdir(directory):
            os.makedirs(directory)
        self.handle = open(self.path, "a")
        deadline = time.time() + self.timeout
        while 1:
            try:
                fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except IOError:
                if time.time() >= deadline:
                    self.handle.close()
                    self.handle = None
                    raise LockTimeout(self.path, str(self.timeout))
                time.sleep(0.02)

    def release(self):
        if self.handle is not None:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def locked(lock, function, *args):
    """Call function(*args) holding lock (no 'with' before Python 2.5)."""
    lock.acquire()
    try:
        return function(*args)
    finally:
        lock.release()
