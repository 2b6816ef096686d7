"""vif-rules-client: drive the vif_rules XAPI plugin from a cloud controller.

    from vif_rules_client import VifRulesClient, audit, errors
    client = VifRulesClient.connect("https://master", "root", password)
    client.apply(vm_uuid)
    print(audit(client, max_workers=8, progress=sys.stderr))
"""

__version__ = "1.0.0"

from .api import (PLUGIN, SUPPORTED_API_MAJORS, AuditSummary, Connection,  # noqa: E402
                  HostAudit, VersionInfo, VifInfo, VifRulesClient, VmInfo,
                  VmResult, audit, session_factory_from)
from .errors import (AuthenticationFailed, BadConfig, BadResponse,  # noqa: E402
                     CommandFailed, CommandTimeout, ConnectionFailed, HostNotFound,
                     HostNotReady, IncompatibleVersion, InternalError,
                     InvalidArgument, LockTimeout, StateError,
                     NoNetworkData, NotFound, PluginCrashed, PluginMissing,
                     UnknownFunction, VifRulesClientError, VmNotFound,
                     VmNotRunning, XapiCallFailed, XapiError, from_failure)

__all__ = [
    "PLUGIN", "SUPPORTED_API_MAJORS", "AuditSummary", "Connection", "HostAudit",
    "VersionInfo", "VifInfo", "VifRulesClient", "VmInfo", "VmResult", "audit",
    "session_factory_from", "AuthenticationFailed", "BadConfig", "BadResponse",
    "CommandFailed", "CommandTimeout", "ConnectionFailed", "HostNotFound", "HostNotReady",
    "IncompatibleVersion", "InternalError", "InvalidArgument", "LockTimeout",
    "NoNetworkData", "StateError",
    "NotFound", "PluginCrashed", "PluginMissing", "UnknownFunction",
    "VifRulesClientError", "VmNotFound", "VmNotRunning", "XapiCallFailed",
    "XapiError", "from_failure",
]
