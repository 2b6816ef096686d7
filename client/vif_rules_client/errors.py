"""Exceptions of the vif-rules client, and the one mapping from XAPI Failures.

Every error the client raises is a VifRulesClientError carrying

    .code     the XAPI / plugin error code (e.g. "VIF_RULES_HOST_NOT_READY"),
              or a client-side code ("VIF_RULES_CLIENT_VM_NOT_RUNNING")
    .params   the Failure's parameters (list of strings)
    .exit_code  the command line's exit status for this kind of error

The plugin's kinds are not written here: plugin_errors.py is the plugin's
own xapi-plugin/vifrules/errors.py, shipped with this package, and one
class per row of its KINDS is made from it (code, exit status, param names,
doc), so the client's command line exits with the status the vif hook
gives for the same error. Client-side kinds number on from 11.

`from_failure(XenAPI.Failure)` is the only place where a Failure's
``details`` become a client exception (see FAILURE_CLASSES).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Type

from . import plugin_errors

_PLUGIN_EXIT = dict((row[1], row[2]) for row in plugin_errors.table())

# Exit codes of the command line (also on each class as .exit_code): the
# plugin's kinds exit as the vif hook does (errors.py's table), then ours.
EXIT_OK = 0
EXIT_INTERNAL = _PLUGIN_EXIT["VIF_RULES_INTERNAL_ERROR"]
EXIT_USAGE = _PLUGIN_EXIT["VIF_RULES_INVALID_ARGUMENT"]   # a bad argument, caught here
EXIT_INVALID_ARGUMENT = _PLUGIN_EXIT["VIF_RULES_INVALID_ARGUMENT"]
EXIT_NO_NETWORK_DATA = _PLUGIN_EXIT["VIF_RULES_NO_NETWORK_DATA"]
EXIT_HOST_NOT_READY = _PLUGIN_EXIT["VIF_RULES_HOST_NOT_READY"]
EXIT_COMMAND_FAILED = _PLUGIN_EXIT["VIF_RULES_COMMAND_FAILED"]
EXIT_LOCK_TIMEOUT = _PLUGIN_EXIT["VIF_RULES_LOCK_TIMEOUT"]
EXIT_BAD_CONFIG = _PLUGIN_EXIT["VIF_RULES_BAD_CONFIG"]
EXIT_XAPI_ERROR = _PLUGIN_EXIT["VIF_RULES_XAPI_ERROR"]
EXIT_STATE_ERROR = _PLUGIN_EXIT["VIF_RULES_STATE_ERROR"]
EXIT_COMMAND_TIMEOUT = _PLUGIN_EXIT["VIF_RULES_COMMAND_TIMEOUT"]
EXIT_CONNECTION = 11
EXIT_PLUGIN_MISSING = 12
EXIT_UNKNOWN_FUNCTION = 13
EXIT_PLUGIN_CRASHED = 14
EXIT_INCOMPATIBLE = 15
EXIT_NOT_FOUND = 16
EXIT_VM_NOT_RUNNING = 17
EXIT_XAPI_FAILURE = 18
EXIT_BAD_RESPONSE = 19
EXIT_AUDIT_PROBLEMS = 20
if max(_PLUGIN_EXIT.values()) >= EXIT_CONNECTION:  # a new plugin kind needs ours moved
    raise ImportError("plugin exit statuses %s overlap the client's from %d"
                      % (sorted(_PLUGIN_EXIT.values()), EXIT_CONNECTION))


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

# The client's names where they differ from the plugin's class names.
_CLIENT_NAMES = {"VifRulesError": "InternalError", "ConfigError": "BadConfig"}


def _plugin_kind(name: str, code: str, exit_status: int, param_names: Sequence[str],
                 doc: str) -> Type[VifRulesClientError]:
    return type(_CLIENT_NAMES.get(name, name), (VifRulesClientError,), {
        "code": code, "exit_code": exit_status, "param_names": tuple(param_names),
        "__doc__": "The plugin's %s (%s)." % (code, doc), "__module__": __name__})


#: One class per kind the plugin reports, by code (from its errors.py).
PLUGIN_CLASSES: Dict[str, Type[VifRulesClientError]] = dict(
    (row[1], _plugin_kind(*row)) for row in plugin_errors.table())

InternalError = PLUGIN_CLASSES["VIF_RULES_INTERNAL_ERROR"]
InvalidArgument = PLUGIN_CLASSES["VIF_RULES_INVALID_ARGUMENT"]
NoNetworkData = PLUGIN_CLASSES["VIF_RULES_NO_NETWORK_DATA"]
HostNotReady = PLUGIN_CLASSES["VIF_RULES_HOST_NOT_READY"]
CommandFailed = PLUGIN_CLASSES["VIF_RULES_COMMAND_FAILED"]
LockTimeout = PLUGIN_CLASSES["VIF_RULES_LOCK_TIMEOUT"]
BadConfig = PLUGIN_CLASSES["VIF_RULES_BAD_CONFIG"]
XapiError = PLUGIN_CLASSES["VIF_RULES_XAPI_ERROR"]
StateError = PLUGIN_CLASSES["VIF_RULES_STATE_ERROR"]
CommandTimeout = PLUGIN_CLASSES["VIF_RULES_COMMAND_TIMEOUT"]


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
FAILURE_CLASSES: Dict[str, Type[VifRulesClientError]] = dict(PLUGIN_CLASSES)
FAILURE_CLASSES.update({
    "XENAPI_MISSING_PLUGIN": PluginMissing,
    "UNKNOWN_XENAPI_PLUGIN_FUNCTION": UnknownFunction,
    "XENAPI_PLUGIN_FAILURE": PluginCrashed,
    "SESSION_AUTHENTICATION_FAILED": AuthenticationFailed,
})


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
