"""Every change goes to syslog under the entry point's name."""

try:
    import syslog
except ImportError:  # not on every platform the tests may import us on
    syslog = None


def syslog_logger(ident):
    def log(message):
        if syslog is None:
            return
        syslog.openlog(ident, syslog.LOG_PID, syslog.LOG_DAEMON)
        syslog.syslog(syslog.LOG_INFO, message)
    return log
