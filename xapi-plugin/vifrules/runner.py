"""The one layer that runs commands: argv lists, never a shell.

Commands start with fork and exec rather than the subprocess module, whose
import alone costs a vif event more than a batch tool run; several can run
at once (one per netfilter family).

No command of ours may commit after its caller's lock is gone: every child
inherits the lock's descriptor, so a caller killed mid-commit leaves the
lock held until its children end, and every child carries an alarm, so it
ends by itself even when no caller is left to kill it.
"""

import errno
import fcntl
import posix
import select
import time

try:  # Python 3: the C module; 'signal' itself imports enum, a vif event's cost
    import _signal as signal
except ImportError:
    import signal

from vifrules import fs
from vifrules.compat import PY3, current_exception, to_bytes, to_text
from vifrules.errors import CommandFailed, CommandTimeout
from vifrules.lock import inherited, set_cloexec

# udev and init scripts may start us with a bare PATH; the tools live in sbin.
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STDERR_LIMIT = 2000
MAX_FD = 1024
EXEC_FAILED = 127
_CHUNK = 65536
DEFAULT_TIMEOUT = 30.0
# A child outlives its caller's own deadline by this much before its alarm
# ends it: normally the caller kills it first and says why.
ALARM_GRACE = 5

TIMED_OUT = "timeout"  # the status of a command killed at its deadline


def _environment():
    env = fs.environ()
    path = env.get("PATH", "")
    env["PATH"] = path and (path + ":" + SEARCH_PATH) or SEARCH_PATH
    env["LC_ALL"] = "C"
    return env


def _close_except(keep):
    """Close every descriptor from 3 up but those in keep."""
    low = 3
    for fd in sorted(keep) + [MAX_FD]:
        if fd >= low:
            _close_range(low, fd)
            low = fd + 1


def _close_range(low, high):
    try:
        posix.closerange(low, high)
    except AttributeError:  # Python < 2.6
        for fd in range(low, high):
            try:
                posix.close(fd)
            except OSError:
                pass


def _into(fd, target):
    """In the child: fd becomes target, open across exec."""
    if fd == target:  # dup2 would leave close-on-exec set
        fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) & ~fcntl.FD_CLOEXEC)
    else:
        posix.dup2(fd, target)


def _find(command, env):
    """The path to exec: looked up here, so the child runs as little Python as
    can be (each page it touches is copied)."""
    if "/" in command:
        return command
    for directory in env["PATH"].split(":"):
        path = fs.join(directory or ".", command)
        if fs.isfile(path) and posix.access(path, posix.X_OK):
            return path
    return command  # exec fails and says why


class Process(object):
    """A started command: its pid, pipes, and what it has said so far."""

    def __init__(self, argv, stdin_text, timeout):
        self.argv = argv
        self.data = to_bytes(stdin_text or "")
        self.out, self.err = [], []
        self.status = None
        self.exec_error = None
        self.timed_out = False
        in_r, in_w = posix.pipe()
        out_r, out_w = posix.pipe()
        err_r, err_w = posix.pipe()
        report_r, report_w = posix.pipe()  # closed by a successful exec
        # The pipes close on exec; _into opens 0, 1 and 2 in the child.
        for fd in (in_r, in_w, out_r, out_w, err_r, err_w, report_r, report_w):
            set_cloexec(fd)
        env = _environment()
        path = _find(argv[0], env)
        pid = posix.fork()
        if pid == 0:  # the child: exec or report why not
            try:
                _into(in_r, 0)
                _into(out_w, 1)
                _into(err_w, 2)
                if not PY3:  # files Python 2 opened are inherited by default
                    _close_except([report_w] + inherited)
                for fd in inherited:
                    _into(fd, fd)
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                signal.alarm(int(timeout) + ALARM_GRACE)  # kept across exec
                posix.execve(path, argv, env)
            except BaseExceptionShim:
                try:
                    error = current_exception()
                    posix.write(report_w, to_bytes("cannot run %s: %s" % (
                        argv[0], getattr(error, "strerror", None) or error)))
                finally:
                    posix._exit(EXEC_FAILED)
        self.pid = pid
        for fd in (in_r, out_w, err_w, report_w):
            posix.close(fd)
        self.report = report_r
        # Never block on a full pipe while the tool waits for us to read.
        fcntl.fcntl(in_w, fcntl.F_SETFL, fcntl.fcntl(in_w, fcntl.F_GETFL) | posix.O_NONBLOCK)
        self.fds = {in_w: "in", out_r: "out", err_r: "err"}

    def confirm(self):
        """Wait until the command runs (or says why it cannot): only then do
        its pipes lead to it. Separate from starting, so several start at once."""
        failure = _read_all(self.report)
        posix.close(self.report)
        self.report = None
        if failure:
            _retry(posix.waitpid, self.pid, 0)
            for fd in list(self.fds.keys()):
                self._close(fd)
            self.exec_error = to_text(failure)
            self.status = EXEC_FAILED
            return
        if not self.data:
            for fd, kind in list(self.fds.items()):
                if kind == "in":
                    self._close(fd)

    def _close(self, fd):
        posix.close(fd)
        del self.fds[fd]


# Python 2.4 has no BaseException; anything raised in the child must end it.
try:
    BaseExceptionShim = BaseException
except NameError:
    BaseExceptionShim = Exception


def _read_all(fd):
    chunks = []
    while 1:
        chunk = _retry(posix.read, fd, _CHUNK)
        if not chunk:
            return to_bytes("").join(chunks)
        chunks.append(chunk)


def _retry(function, *args):
    """Call again when a signal interrupts the system call (Python < 3.5)."""
    while 1:
        try:
            return function(*args)
        except (OSError, select.error):
            if _errno(current_exception()) != errno.EINTR:
                raise


def _errno(error):
    number = getattr(error, "errno", None)
    if number is None and getattr(error, "args", None):
        number = error.args[0]
    return number


def _communicate(processes, deadline):
    """Feed every stdin and drain every stdout and stderr at once, until
    every pipe is closed or the deadline passes (then False)."""
    while 1:
        readers, writers = [], []
        owner = {}
        for process in processes:
            for fd, kind in process.fds.items():
                owner[fd] = (process, kind)
                if kind == "in":
                    writers.append(fd)
                else:
                    readers.append(fd)
        if not owner:
            return True
        left = deadline - time.time()
        if left <= 0:
            return False
        ready_r, ready_w = _retry(select.select, readers, writers, [], left)[:2]
        for fd in ready_w:
            process = owner[fd][0]
            try:
                written = _retry(posix.write, fd, process.data[:_CHUNK])
            except OSError:
                if _errno(current_exception()) == errno.EAGAIN:
                    continue
                written = len(process.data)  # the tool quit without reading it all
            process.data = process.data[written:]
            if not process.data:
                process._close(fd)
        for fd in ready_r:
            process, kind = owner[fd]
            chunk = _retry(posix.read, fd, _CHUNK)
            if chunk:
                getattr(process, kind).append(chunk)
            else:
                process._close(fd)


def _finish(process, deadline):
    """Reap process; one still running at the deadline is killed and marked."""
    if process.report is not None:
        posix.close(process.report)
        process.report = None
    for fd in list(process.fds.keys()):  # after an error: let the tool end
        process._close(fd)
    pause = 0.0001  # a tool that closed its pipes is about to exit: look again soon
    while process.status is None:
        pid, status = _retry(posix.waitpid, process.pid, posix.WNOHANG)
        if pid == 0:
            if time.time() < deadline:
                time.sleep(pause)
                pause = min(pause * 2, 0.01)
                continue
            process.timed_out = True
            posix.kill(process.pid, signal.SIGKILL)
            status = _retry(posix.waitpid, process.pid, 0)[1]
        if process.timed_out:
            process.status = TIMED_OUT
        elif posix.WIFEXITED(status):
            process.status = posix.WEXITSTATUS(status)
        else:
            process.status = 128 + posix.WTERMSIG(status)
    empty = to_bytes("")
    out = to_text(empty.join(process.out))
    err = process.exec_error or to_text(empty.join(process.err))
    return process.status, out, err


def run_all(commands, check=True, timeout=DEFAULT_TIMEOUT):
    """Run (argv, stdin text or None) pairs at the same time; return their
    (status, stdout, stderr) in order. With check, the first that failed
    raises CommandFailed (CommandTimeout if it ran out of time), after every
    one has ended. A command that could not be started counts as failed
    with status 127; one killed at the deadline has status TIMED_OUT."""
    processes = []
    deadline = time.time() + timeout
    try:
        for argv, stdin_text in commands:
            processes.append(Process([str(a) for a in argv], stdin_text, timeout))
        for process in processes:
            process.confirm()
        _communicate(processes, deadline)
    finally:
        results = [_finish(process, deadline) for process in processes]
    if check:
        for process, (status, out, err) in zip(processes, results):
            if status != 0:
                raise failure(process.argv, (status, out, err), timeout)
    return results


def failure(argv, result, timeout):
    """The error of a command that ended with result (status, out, err)."""
    if result[0] == TIMED_OUT:
        return CommandTimeout(" ".join(argv), "%g" % timeout)
    return CommandFailed(" ".join(argv), str(result[0]), result[2].strip()[-STDERR_LIMIT:])


def run(argv, stdin_text=None, check=True, timeout=DEFAULT_TIMEOUT):
    """Run argv; return (status, stdout, stderr) as text."""
    return run_all([(argv, stdin_text)], check, timeout)[0]
