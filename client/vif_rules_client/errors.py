"""Exceptions of the vif-rules client, and the one mapping from XAPI Failures.

Every error the client raises is a VifRulesClientError carrying

    .code     the XAPI / plugin error code (e.g. "VIF_RULES_HOST_NOT_READY"),
              or a client-side code ("VIF_RULES_CLIENT_VM_NOT_RUNNING")
    .params   the Failure's parameters (list of strings)
    .exit_code  the command line's exit status for this kind of error

`from_failure(XenAPI.Failure)` is the only place where a Failure's
``details`` become a client exception (see FAILURE_CLASSES).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Type

# Exit codes of the command line (also on each class as .exit_code).
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_INVALID_ARGUMENT = 4
EXIT_NO_NETWORK_DATA = 5
EXIT_HOST_NOT_READY = 6
EXIT_COMMAND_FAILED = 7
EXIT_LOCK_TIMEOUT = 8
EXIT_BAD_CONFIG = 9
EXIT_XAPI_ERROR = 10
EXIT_PLUGIN_MISSING = 11
EXIT_UNKNOWN_FUNCTION = 12
EXIT_PLUGIN_CRASHED = 13
EXIT_INCOMPATIBLE = 14
EXIT_NOT_FOUND = 15
EXIT_VM_NOT_RUNNING = 16
EXIT_XAPI_FAILURE = 17
EXIT_BAD_RESPONSE = 18
EXIT_AUDIT_PROBLEMS = 20


class VifRulesClientError(Exception):
    """Base of every error of this package."""

    code = "VIF_RULES_CLIENT_ERROR"
    exit_code = EXIT_INTERNAL
    #: names of the params, in order, for messages and attribute access
    param_names: Sequence[str] = ()

    def __init__(self, *params: object, code: Optional[str] = None,
                 host: Optional[str] = None, function: Optional[str] = None):
        self.params: List[str] = [str(p) for p in params]
        if code is not None:
            self.code = code
        self.host = host            # host name/ref the call went to, if any
        self.function = function    # plugin function, if any
        super().__init__(self.code, *self.params)

    def param(self, name: str, default: str = "") -> str:
        """A param by its documented name (e.g. err.param('reason'))."""
        try:
            index = list(self.param_names).index(name)
        except ValueError:
            return default
        return self.params[index] if index < len(self.params) else default

    @property
    def details(self) -> List[str]:
        """[code] + params, as XenAPI.Failure.details."""
        return [self.code] + list(self.params)

    def describe(self, where: bool = True) -> str:
        if self.param_names and self.params:
            named = ", ".join("%s=%s" % (n, v) for n, v in
                              zip(self.param_names, self.params))
            extra = self.params[len(self.param_names):]
            if extra:
                named += ", " + ", ".join(extra)
        else:
            named = ", ".join(self.params)
        place = []
        if where and self.function:
            place.append(self.function)
        if where and self.host:
            place.append("on " + self.host)
        prefix = ("%s: " % " ".join(place)) if place else ""
        return "%s%s%s" % (prefix, self.code, (" (%s)" % named) if named else "")

    def __str__(self) -> str:
        return self.describe()

    def to_dict(self) -> Dict[str, object]:
        return {"error": type(self).__name__, "code": self.code,
                "params": list(self.params), "host": self.host,
                "function": self.function}


# ------------------------------------------------------- the plugin's codes

class InvalidArgument(VifRulesClientError):
    code = "VIF_RULES_INVALID_ARGUMENT"
    exit_code = EXIT_INVALID_ARGUMENT
    param_names = ("name", "value", "reason")


class NoNetworkData(VifRulesClientError):
    code = "VIF_RULES_NO_NETWORK_DATA"
    exit_code = EXIT_NO_NETWORK_DATA
    param_names = ("vif", "why")


class HostNotReady(VifRulesClientError):
    code = "VIF_RULES_HOST_NOT_READY"
    exit_code = EXIT_HOST_NOT_READY
    param_names = ("what", "how")


class CommandFailed(VifRulesClientError):
    code = "VIF_RULES_COMMAND_FAILED"
    exit_code = EXIT_COMMAND_FAILED
    param_names = ("command", "status", "stderr")


class LockTimeout(VifRulesClientError):
    code = "VIF_RULES_LOCK_TIMEOUT"
    exit_code = EXIT_LOCK_TIMEOUT
    param_names = ("lockfile", "seconds")


class BadConfig(VifRulesClientError):
    code = "VIF_RULES_BAD_CONFIG"
    exit_code = EXIT_BAD_CONFIG
    param_names = ("file", "line", "reason")


class XapiError(VifRulesClientError):
    """The plugin's own XAPI call (on the host) failed."""
    code = "VIF_RULES_XAPI_ERROR"
    exit_code = EXIT_XAPI_ERROR
    param_names = ("call", "details")


# ------------------------------------------------------------ XAPI's codes

class PluginMissing(VifRulesClientError):
    """The host has no vif_rules plugin installed."""
    code = "XENAPI_MISSING_PLUGIN"
    exit_code = EXIT_PLUGIN_MISSING
    param_names = ("plugin",)


class UnknownFunction(VifRulesClientError):
    """The plugin on the host does not know the function (an older plugin?)."""
    code = "UNKNOWN_XENAPI_PLUGIN_FUNCTION"
    exit_code = EXIT_UNKNOWN_FUNCTION
    param_names = ("function",)


class PluginCrashed(VifRulesClientError):
    """The plugin exited non-zero, printed garbage or raised an unexpected
    exception (XENAPI_PLUGIN_FAILURE, or the plugin's internal error)."""
    code = "XENAPI_PLUGIN_FAILURE"
    exit_code = EXIT_PLUGIN_CRASHED


# ---------------------------------------------------- client-side problems

class XapiCallFailed(VifRulesClientError):
    """Any other XAPI Failure (HANDLE_INVALID, permission denied...)."""
    code = "XAPI_FAILURE"
    exit_code = EXIT_XAPI_FAILURE


class AuthenticationFailed(XapiCallFailed):
    code = "SESSION_AUTHENTICATION_FAILED"
    exit_code = EXIT_CONNECTION
    param_names = ("user", "message")


class ConnectionFailed(VifRulesClientError):
    """XAPI could not be reached (refused, timeout, TLS, HTTP error)."""
    code = "VIF_RULES_CLIENT_CONNECTION_FAILED"
    exit_code = EXIT_CONNECTION
    param_names = ("url", "reason")


class IncompatibleVersion(VifRulesClientError):
    """The plugin's API major version is not one this client speaks."""
    code = "VIF_RULES_CLIENT_INCOMPATIBLE_VERSION"
    exit_code = EXIT_INCOMPATIBLE
    param_names = ("host", "api_version", "supported")


class BadResponse(VifRulesClientError):
    """The plugin answered with something that is not the documented JSON."""
    code = "VIF_RULES_CLIENT_BAD_RESPONSE"
    exit_code = EXIT_BAD_RESPONSE
    param_names = ("function", "reason", "output")


class NotFound(VifRulesClientError):
    code = "VIF_RULES_CLIENT_NOT_FOUND"
    exit_code = EXIT_NOT_FOUND
    param_names = ("kind", "name", "reason")


class VmNotFound(NotFound):
    code = "VIF_RULES_CLIENT_VM_NOT_FOUND"


class HostNotFound(NotFound):
    code = "VIF_RULES_CLIENT_HOST_NOT_FOUND"


class VmNotRunning(VifRulesClientError):
    """The VM has no domain on any host (Halted, Suspended...)."""
    code = "VIF_RULES_CLIENT_VM_NOT_RUNNING"
    exit_code = EXIT_VM_NOT_RUNNING
    param_names = ("vm", "power_state")


#: The one mapping: Failure code -> exception class.
FAILURE_CLASSES: Dict[str, Type[VifRulesClientError]] = {
    "VIF_RULES_INVALID_ARGUMENT": InvalidArgument,
    "VIF_RULES_NO_NETWORK_DATA": NoNetworkData,
    "VIF_RULES_HOST_NOT_READY": HostNotReady,
    "VIF_RULES_COMMAND_FAILED": CommandFailed,
    "VIF_RULES_LOCK_TIMEOUT": LockTimeout,
    "VIF_RULES_BAD_CONFIG": BadConfig,
    "VIF_RULES_XAPI_ERROR": XapiError,
    "VIF_RULES_INTERNAL_ERROR": PluginCrashed,
    "XENAPI_MISSING_PLUGIN": PluginMissing,
    "UNKNOWN_XENAPI_PLUGIN_FUNCTION": UnknownFunction,
    "XENAPI_PLUGIN_FAILURE": PluginCrashed,
    "SESSION_AUTHENTICATION_FAILED": AuthenticationFailed,
}


def from_details(details: object, host: Optional[str] = None,
                 function: Optional[str] = None) -> VifRulesClientError:
    """The exception for a Failure's details ([CODE, params...])."""
    if not isinstance(details, (list, tuple)) or not details:
        return XapiCallFailed(repr(details), code="XAPI_FAILURE", host=host,
                              function=function)
    code = str(details[0])
    params = [str(d) for d in details[1:]]
    cls = FAILURE_CLASSES.get(code)
    if cls is None:
        if code.startswith("VIF_RULES_"):
            # A code of a newer plugin: still a plugin error, keep its code.
            return PluginCrashed(*params, code=code, host=host, function=function)
        return XapiCallFailed(*params, code=code, host=host, function=function)
    return cls(*params, code=code, host=host, function=function)


def from_failure(failure: BaseException, host: Optional[str] = None,
                 function: Optional[str] = None) -> VifRulesClientError:
    """The exception for a XenAPI.Failure (anything with .details)."""
    error = from_details(getattr(failure, "details", None), host=host,
                         function=function)
    error.__cause__ = failure
    return error


__all__ = [name for name, value in list(globals().items())
           if isinstance(value, type) and issubclass(value, VifRulesClientError)]
__all__ += ["FAILURE_CLASSES", "from_details", "from_failure"]
