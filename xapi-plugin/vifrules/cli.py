"""Command lines over the engine: the vif hook and the host-rules init script.

Errors become one line on stderr and the exit status of their kind.
"""

import sys

from vifrules import config as config_module, fs
from vifrules.addresses import VifName, parse_interface_list, parse_nic
from vifrules import jsontext
from vifrules.compat import current_exception
from vifrules.backend import engine_for, vif_event
from vifrules.errors import InvalidArgument, NoNetworkData, VifRulesError
from vifrules.log import error_logger, internal_error, syslog_logger

HOOK_USAGE = """usage: vif_rules.py online|add VIF [--network JSON]
       vif_rules.py offline|remove VIF
VIF is vif<domid>.<devid> or tap<domid>.<devid>."""

HOST_USAGE = "usage: host-rules start|stop|restart|status|check|sync"

APPLY_ACTIONS = ("online", "add")
TEARDOWN_ACTIONS = ("offline", "remove")


def _write(stream, text):
    stream.write(text + "\n")
    stream.flush()


def parse_hook_args(argv):
    """(action, VifName, network text or None); InvalidArgument on anything odd."""
    positional = []
    network = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--network":
            if i + 1 >= len(argv):
                raise InvalidArgument("--network", "", "needs a JSON value")
            network = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--network="):
            network = arg[len("--network="):]
        elif arg.startswith("-"):
            raise InvalidArgument("argument", arg, "unknown option")
        else:
            positional.append(arg)
        i += 1
    if len(positional) != 2:
        raise InvalidArgument("arguments", " ".join(argv), "expected ACTION VIF")
    action = positional[0]
    if action not in APPLY_ACTIONS + TEARDOWN_ACTIONS:
        raise InvalidArgument("action", action, "expected online, add, offline or remove")
    vif = VifName(positional[1])
    if network is not None and action in TEARDOWN_ACTIONS:
        raise InvalidArgument("--network", network, "not used by " + action)
    return action, vif, network


def run_guarded(function, argv, stderr, ident="vif_rules"):
    """Run function(argv); map our errors to one line on stderr, one report
    at LOG_ERR and the exit status of their kind. Anything else is a bug of
    ours: VIF_RULES_INTERNAL_ERROR (exit 1), its traceback to syslog only."""
    try:
        return function(argv)
    except VifRulesError:
        error = current_exception()
    except Exception:
        error = internal_error()
    _write(stderr, "%s: error: %s" % (ident, error.message()))
    error_logger(ident)(error)
    return error.exit_status


def _xapi_lookup(cfg, vif):
    from vifrules import xapi
    if not fs.exists(cfg.get("XAPI_SOCKET")):
        raise NoNetworkData(vif.name, "no --network given and XAPI is not running (%s)"
                            % cfg.get("XAPI_SOCKET"))
    session = xapi.local_session(cfg)
    try:
        return xapi.nic_for_vif(session, cfg, vif)
    finally:
        xapi.logout(session)


def hook_main(argv, stdout=None, stderr=None):
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if argv[:1] in (["-h"], ["--help"]):
        _write(stdout, HOOK_USAGE)
        return 0

    def hook(argv):
        action, vif, network = parse_hook_args(argv)
        cfg = config_module.load()
        nic = None
        if action in APPLY_ACTIONS:
            if network is None:
                nic = _xapi_lookup(cfg, vif)
            else:
                nic = parse_nic(network)
        result = vif_event(cfg, vif, nic, syslog_logger("vif_rules"), error_logger("vif_rules"))
        _write(stdout, jsontext.dumps(result))
        return 0

    return run_guarded(hook, argv, stderr)


def host_rules_main(argv, stdout=None, stderr=None):
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr

    def host_rules(argv):
        if len(argv) not in (1, 2) or argv[0] not in (
                "start", "stop", "restart", "status", "check", "reload", "sync"):
            raise InvalidArgument("action", " ".join(argv), HOST_USAGE)
        action = argv[0]
        trusted = None
        if len(argv) == 2:
            if action not in ("start", "restart", "reload", "sync"):
                raise InvalidArgument("arguments", " ".join(argv), HOST_USAGE)
            trusted = parse_interface_list(argv[1])
        from vifrules import readiness  # only here: the vif hook must start fast
        cfg = config_module.load()
        engine = engine_for(cfg, syslog_logger("host-rules"), error_logger("host-rules"))
        if action == "sync" and fs.exists(cfg.get("XAPI_SOCKET")):
            # What the plugin's sync does, through the local socket: default
            # DROP and every running VIF XAPI has data for, in one batch per family.
            from vifrules import xapi
            readiness.require_bridge_backend(cfg)
            session = xapi.local_session(cfg)
            try:
                result = engine.sync(xapi.running_vifs(session, cfg), trusted)
            finally:
                xapi.logout(session)
            _write(stdout, "host-rules: default-drop rules in force; %d running VIF(s) "
                   "protected; without network data (closed): %s" % (
                       len(result["protected"]), " ".join(result["without_data"]) or "none"))
            return 0
        if action == "sync":
            _write(stdout, "host-rules: XAPI is not running: protecting the VIFs on record")
            action = "start"
        if action in ("start", "restart", "reload"):
            readiness.require_bridge_backend(cfg)
            result = engine.setup_host(trusted)
            _write(stdout, "host-rules: default-drop rules in force; %d VIF(s) re-protected; "
                   "trusted uplinks: %s" % (len(result["vifs"]),
                                            " ".join(trusted or cfg.trusted_interfaces) or "none"))
            return 0
        if action == "stop":
            engine.stop_host()
            _write(stderr, "host-rules: WARNING: vif-rules is STOPPED. Guest isolation is OFF: "
                   "every guest can now spoof addresses and see other guests' traffic.")
            return 0
        if action == "check":
            items = readiness.check(cfg)
            for line in readiness.format_report(items):
                _write(stdout, line)
            return (not readiness.is_ready(items)) and 1 or 0
        status = engine.status()
        hook = status.get("hook")
        if hook:
            _write(stdout, "host-rules: vif script %s: %s%s" % (
                hook["script"], hook["state"],
                (hook["generation"] and " (generation %s)" % hook["generation"]) or ""))
        if status["protected"]:
            _write(stdout, "host-rules: protected; %d VIF(s) on record; trusted uplinks: %s"
                   % (len(status["vifs"]), " ".join(status["trusted"]) or "none"))
            return 0
        _write(stdout, "host-rules: NOT protected:")
        for item in status["missing"]:
            _write(stdout, "  - " + item)
        return 3  # LSB: program is not running

    return run_guarded(host_rules, argv, stderr, "host-rules")
