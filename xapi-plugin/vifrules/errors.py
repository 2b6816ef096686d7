"""One exception type per kind of failure, and the one table of their codes.

Each carries an XAPI-style code and string params; the plugin maps them to
XenAPIPlugin.Failure(code, params), the CLI to a message and an exit status.
Every param is made printable ASCII on one line by escape(): input a caller
or a guest wrote reaches stderr, syslog and the Failure quoted, never raw.

This file imports nothing: the controller-side client ships it as it is
(client/vif_rules_client/plugin_errors.py) and derives its classes from
KINDS, so the codes, exit statuses and param names have one source.
"""

import sys

MAX_PARAM = 400  # characters of one escaped param; the rest is cut and counted

_NAMED_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}

if sys.version_info[0] >= 3:
    _TEXT = str
else:
    _TEXT = unicode  # noqa: F821 (Python 2 only)


def escape(value):
    """value as printable ASCII on one line: backslash, '"', controls and
    everything outside ASCII as Python-style escapes (so the text reads back
    unambiguously); bytes of a Python 2 str escape as \\xNN."""
    if not isinstance(value, (str, _TEXT)):
        value = repr(value)
        if not isinstance(value, (str, _TEXT)):
            value = str(value)
    out = []
    size = 0
    at = 0
    for char in value:
        if size >= MAX_PARAM:
            out.append("...(%d more)" % (len(value) - at))
            break
        if char in _NAMED_ESCAPES:
            piece = _NAMED_ESCAPES[char]
        elif " " <= char <= "~":
            piece = char
        else:
            code = ord(char)
            if code < 0x100:
                piece = "\\x%02x" % code
            elif code < 0x10000:
                piece = "\\u%04x" % code
            else:
                piece = "\\U%08x" % code
        out.append(piece)
        size += len(piece)
        at += 1
    return str("".join(out))


class VifRulesError(Exception):
    """params: what failed, why (an error of ours, not of the input)"""
    code = "VIF_RULES_INTERNAL_ERROR"
    exit_status = 1
    param_names = ("what", "why")

    def __init__(self, *params):
        self.params = [escape(p) for p in params]
        Exception.__init__(self, *self.params)

    def message(self):
        """CODE: name="param", ... on one line (params beyond the names unnamed)."""
        parts = []
        i = 0
        for param in self.params:
            if i < len(self.param_names):
                parts.append('%s="%s"' % (self.param_names[i], param))
            else:
                parts.append('"%s"' % param)
            i += 1
        return "%s: %s" % (self.code, ", ".join(parts))

    def __str__(self):
        return self.message()


class InvalidArgument(VifRulesError):
    """params: name, value, reason"""
    code = "VIF_RULES_INVALID_ARGUMENT"
    exit_status = 2
    param_names = ("name", "value", "reason")


class NoNetworkData(VifRulesError):
    """params: vif, what was looked for"""
    code = "VIF_RULES_NO_NETWORK_DATA"
    exit_status = 3
    param_names = ("vif", "what")


class HostNotReady(VifRulesError):
    """params: what is missing, how to fix it"""
    code = "VIF_RULES_HOST_NOT_READY"
    exit_status = 4
    param_names = ("what", "how")


class CommandFailed(VifRulesError):
    """params: command, exit status, stderr"""
    code = "VIF_RULES_COMMAND_FAILED"
    exit_status = 5
    param_names = ("command", "status", "stderr")


class LockTimeout(VifRulesError):
    """params: lock file, seconds waited"""
    code = "VIF_RULES_LOCK_TIMEOUT"
    exit_status = 6
    param_names = ("lockfile", "seconds")


class ConfigError(VifRulesError):
    """params: file, line, reason"""
    code = "VIF_RULES_BAD_CONFIG"
    exit_status = 7
    param_names = ("file", "line", "reason")


class XapiError(VifRulesError):
    """params: the XAPI call, its error description"""
    code = "VIF_RULES_XAPI_ERROR"
    exit_status = 8
    param_names = ("call", "details")


class StateError(VifRulesError):
    """params: the state file or directory, what failed (read-only, full, corrupt)"""
    code = "VIF_RULES_STATE_ERROR"
    exit_status = 9
    param_names = ("path", "what")


class CommandTimeout(VifRulesError):
    """params: command, seconds waited"""
    code = "VIF_RULES_COMMAND_TIMEOUT"
    exit_status = 10
    param_names = ("command", "seconds")


# The one table: every kind a caller can receive, in exit-status order. The
# plugin's ERROR_CODES, the README's tables and the client's exception
# classes all come from here.
KINDS = (VifRulesError, InvalidArgument, NoNetworkData, HostNotReady, CommandFailed,
         LockTimeout, ConfigError, XapiError, StateError, CommandTimeout)


def table():
    """[(class name, code, exit status, param names, doc)] of KINDS."""
    rows = []
    for kind in KINDS:
        rows.append((kind.__name__, kind.code, kind.exit_status, kind.param_names,
                     (kind.__doc__ or "").strip()))
    return rows
