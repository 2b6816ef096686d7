"""Every change goes to syslog under the entry point's name; every failure
once more at LOG_ERR, at the edge that reports it (error_logger)."""

try:
    import syslog
except ImportError:  # not on every platform the tests may import us on
    syslog = None

import sys

from vifrules.errors import VifRulesError, escape


def _send(ident, priority, lines):
    if syslog is None:
        return
    syslog.openlog(ident, syslog.LOG_PID, syslog.LOG_DAEMON)
    for line in lines:
        syslog.syslog(priority, line)


def syslog_logger(ident):
    def log(message):
        if syslog is not None:
            _send(ident, syslog.LOG_INFO, [message])
    return log


def error_lines(error):
    """The lines an error is logged with: its message (code and params), then
    for a failed restore the input around the failing line (error.context),
    each line escaped: a restore's input may hold a guest's data."""
    lines = ["error: " + error.message()]
    context = getattr(error, "context", None)
    if context:
        lines.append("error: %s: the restore input around the failing line:" % error.code)
        for line in context:
            lines.append("error: | " + escape(line))
    for line in getattr(error, "traceback", None) or []:
        lines.append("error: # " + escape(line.rstrip("\n")))
    return lines


def internal_error():
    """The exception being handled, a bug of ours, as VIF_RULES_INTERNAL_ERROR
    (its type and text) with its traceback kept for the log."""
    import traceback  # only on this path: a vif event must start fast
    kind, value, trace = sys.exc_info()
    error = VifRulesError(kind.__name__, value)
    lines = []
    for chunk in traceback.format_exception(kind, value, trace):
        lines.extend(chunk.rstrip("\n").split("\n"))
    error.traceback = lines
    return error


def error_logger(ident):
    """log(error): the error's lines to syslog at LOG_ERR."""
    def log(error):
        if syslog is not None:
            _send(ident, syslog.LOG_ERR, error_lines(error))
    return log


def left_to_finish(log, log_error, what, error):
    """A cleanup that failed (error) and is left to the next operation, whose
    mark makes it finish the job: the error at LOG_ERR, and what was left."""
    log_error(error)
    log("%s did not finish (%s); the next operation or sync completes it" % (what, error.code))
