"""The XAPI plugin's functions: a thin layer over the engine.

Each takes (session, args) with args a map of strings, checks the argument
names strictly, and returns a JSON string. Errors stay VifRulesError here;
function_table maps them once to the caller's XenAPIPlugin.Failure.
"""

from vifrules import API_VERSION, VERSION
from vifrules import config as config_module
from vifrules import readiness, xapi
from vifrules.addresses import VifName, parse_interface_list, parse_nic
from vifrules import jsontext
from vifrules.compat import current_exception, string_types
from vifrules.backend import engine_for
from vifrules.errors import KINDS, InvalidArgument, VifRulesError
from vifrules.log import error_logger, internal_error, syslog_logger

PLUGIN_NAME = "vif_rules"

# Error codes a caller may receive, with their params: errors.KINDS (see README).
ERROR_CODES = tuple([kind.code for kind in KINDS if kind is not VifRulesError])


def _arguments(args, required, optional):
    """args checked against the names a function takes; returns a plain dict.
    Names and values are passed to InvalidArgument as they came: it escapes
    them (a name may be any XML-RPC string, non-ASCII included)."""
    if not isinstance(args, dict):
        raise InvalidArgument("args", args, "must be a map of strings")
    names = list(args.keys())
    names.sort()
    for name in names:
        if not isinstance(name, string_types) or (
                name not in required and name not in optional):
            raise InvalidArgument(name, args[name], "unknown argument")
        if not isinstance(args[name], string_types):
            raise InvalidArgument(name, args[name], "must be a string")
    for name in required:
        if name not in args or args[name] == "":
            raise InvalidArgument(name, "", "missing")
    return dict(args)


def _json(value):
    return jsontext.dumps(value)


def _engine():
    cfg = config_module.load()
    return cfg, engine_for(cfg, syslog_logger(PLUGIN_NAME), error_logger(PLUGIN_NAME))


def get_version(session, args):
    _arguments(args, (), ())
    return _json({"api_version": API_VERSION, "version": VERSION})


def setup_host(session, args):
    args = _arguments(args, (), ("trusted",))
    cfg, engine = _engine()
    trusted = None
    if "trusted" in args:
        trusted = parse_interface_list(args["trusted"])
    readiness.require_ready(cfg)
    result = engine.setup_host(trusted)
    result["trusted"] = trusted or cfg.trusted_interfaces
    return _json(result)


def apply_vif(session, args):
    args = _arguments(args, ("vif",), ("network",))
    vif = VifName(args["vif"])
    cfg, engine = _engine()
    if "network" in args:
        nic = parse_nic(args["network"])
    else:
        nic = xapi.nic_for_vif(session, cfg, vif)
    result = engine.apply_vif(vif, nic)
    result.update(nic.to_dict())
    return _json(result)


def teardown_vif(session, args):
    args = _arguments(args, ("vif",), ())
    vif = VifName(args["vif"])
    return _json(_engine()[1].teardown_vif(vif))


def status(session, args):
    args = _arguments(args, (), ("vif",))
    wanted = None
    if "vif" in args:
        wanted = VifName(args["vif"]).name  # refused before any work
    result = _engine()[1].status()
    if wanted is not None:
        result["vifs"] = [v for v in result["vifs"] if v["vif"] == wanted]
    return _json(result)


def sync(session, args):
    _arguments(args, (), ())
    cfg, engine = _engine()
    running = xapi.running_vifs(session, cfg)
    return _json(engine.sync(running))


FUNCTIONS = {
    "get_version": get_version,
    "setup_host": setup_host,
    "apply_vif": apply_vif,
    "teardown_vif": teardown_vif,
    "status": status,
    "sync": sync,
}


def function_table(failure_class):
    """FUNCTIONS with each VifRulesError raised as failure_class(code, params):
    the one place where our errors become XAPI Failures."""
    table = {}
    for name, function in FUNCTIONS.items():
        table[name] = _at_the_edge(function, failure_class)
    return table


def _at_the_edge(function, failure_class):
    """Our errors, and a bug's exception as VIF_RULES_INTERNAL_ERROR, to
    syslog at LOG_ERR once and to the caller as a Failure of escaped params."""
    def call(session, args):
        try:
            return function(session, args)
        except VifRulesError:
            error = current_exception()
        except Exception:
            error = internal_error()
        error_logger(PLUGIN_NAME)(error)
        raise failure_class(error.code, error.params)
    return call
