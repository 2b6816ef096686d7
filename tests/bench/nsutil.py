"""Namespaces the benchmark creates (and always deletes) and a precise runner.

run() starts a process directly inside a namespace (setns in the child before
exec, so no 'ip netns exec' process sits in front of it), waits with a pidfd
and wait4(), and returns the wall time and the rusage of that process alone.
"""

import ctypes
import os
import select
import subprocess
import tempfile
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_created = []  # every namespace we made, for cleanup_all()


class RunResult(object):
    def __init__(self, argv, status, seconds, rusage, stdout, stderr):
        self.argv = argv
        self.returncode = status
        self.seconds = seconds
        self.rusage = rusage
        self.stdout = stdout
        self.stderr = stderr

    def check(self):
        if self.returncode != 0:
            raise RuntimeError("%s failed (%s): %s %s" % (
                " ".join(self.argv)[:300], self.returncode, self.stdout[-1500:],
                self.stderr[-1500:]))
        return self


def ns_path(name):
    return "/run/netns/" + name


def create(name):
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    _created.append(name)
    run(name, ["ip", "link", "set", "lo", "up"]).check()
    return name


def delete(name):
    subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL, timeout=30)
    if name in _created:
        _created.remove(name)


def cleanup_all():
    for name in list(reversed(_created)):
        delete(name)


def _enter(ns):
    def preexec():
        fd = os.open(ns_path(ns), os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                os._exit(125)
        finally:
            os.close(fd)
    return preexec


def run(ns, argv, env=None, input_text=None, timeout=120):
    """Run argv inside namespace ns; a RunResult (wall seconds, own rusage)."""
    argv = [str(a) for a in argv]
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    stdin = None
    if input_text is not None:
        stdin = tempfile.TemporaryFile()
        stdin.write(input_text.encode())
        stdin.seek(0)
    try:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdin=stdin or subprocess.DEVNULL, stdout=out,
                                   stderr=err, env=env, preexec_fn=_enter(ns),
                                   close_fds=True)
        pidfd = os.pidfd_open(process.pid)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if not poller.poll(timeout * 1000):
                process.kill()
                os.wait4(process.pid, 0)
                process.returncode = -9
                raise RuntimeError("timeout after %ss: %s" % (timeout, " ".join(argv)[:300]))
            _, status, rusage = os.wait4(process.pid, 0)
            seconds = time.perf_counter() - start
        finally:
            os.close(pidfd)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return RunResult(argv, process.returncode, seconds, rusage,
                         out.read().decode(errors="replace"),
                         err.read().decode(errors="replace"))
    finally:
        out.close()
        err.close()
        if stdin is not None:
            stdin.close()


def popen(ns, argv, env=None):
    """A background process inside ns (iperf3 server); caller kills it."""
    return subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, preexec_fn=_enter(ns),
                            close_fds=True)
