"""One exception type per kind of failure.

Each carries an XAPI-style code and string params; the plugin maps them to
XenAPIPlugin.Failure(code, params), the CLI to a message and an exit code.
"""


class VifRulesError(Exception):
    code = "VIF_RULES_INTERNAL_ERROR"
    exit_status = 1

    def __init__(self, *params):
        Exception.__init__(self, *params)
        self.params = [str(p) for p in params]

    def message(self):
        return "%s: %s" % (self.code, ", ".join(self.params))

    def __str__(self):
        return self.message()


class InvalidArgument(VifRulesError):
    """params: name, value, reason"""
    code = "VIF_RULES_INVALID_ARGUMENT"
    exit_status = 2


class NoNetworkData(VifRulesError):
    """params: vif, what was looked for"""
    code = "VIF_RULES_NO_NETWORK_DATA"
    exit_status = 3


class HostNotReady(VifRulesError):
    """params: what is missing, how to fix it"""
    code = "VIF_RULES_HOST_NOT_READY"
    exit_status = 4


class CommandFailed(VifRulesError):
    """params: command, exit status, stderr"""
    code = "VIF_RULES_COMMAND_FAILED"
    exit_status = 5


class LockTimeout(VifRulesError):
    """params: lock file, seconds waited"""
    code = "VIF_RULES_LOCK_TIMEOUT"
    exit_status = 6


class ConfigError(VifRulesError):
    """params: file, line, reason"""
    code = "VIF_RULES_BAD_CONFIG"
    exit_status = 7


class XapiError(VifRulesError):
    """params: the XAPI call, its error description"""
    code = "VIF_RULES_XAPI_ERROR"
    exit_status = 8



class StateError(VifRulesError):
    """params: the state file or directory, what failed (read-only, full, corrupt)"""
    code = "VIF_RULES_STATE_ERROR"
    exit_status = 9


class CommandTimeout(VifRulesError):
    """params: command, seconds waited"""
    code = "VIF_RULES_COMMAND_TIMEOUT"
    exit_status = 10
