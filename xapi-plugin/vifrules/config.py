"""The one configuration file, shared by the init script, the hook and the plugin.

Format: sysconfig style KEY=value lines; '#' starts a comment; values may be
quoted. The path is /etc/sysconfig/vif-rules unless VIF_RULES_CONF says else.
"""

import errno

from vifrules import fs
from vifrules.addresses import parse_interface_list
from vifrules.compat import current_exception, to_text
from vifrules.errors import ConfigError, InvalidArgument
from vifrules.lexical import DIGITS, LETTERS, UPPER, decimal, only

DEFAULT_PATH = "/etc/sysconfig/vif-rules"
ENV_VAR = "VIF_RULES_CONF"

# The dom0 defaults, used for every key the file leaves out.
DEFAULTS = {
    "IPTABLES": "iptables",
    "IP6TABLES": "ip6tables",
    "EBTABLES": "ebtables",
    "ARPTABLES": "arptables",
    "TRUSTED_INTERFACES": "",
    "BACKEND": "auto",  # auto (detected as XenServer does), bridge, openvswitch
    "LOCK_FILE": "/var/lock/vif-rules.lock",
    "LOCK_TIMEOUT": "60",
    "COMMAND_TIMEOUT": "30",
    "STATE_DIR": "/var/run/vif-rules",
    "PROC_SYS": "/proc/sys",
    "XENSOURCE_NETWORK_CONF": "/etc/xensource/network.conf",
    "XENSOURCE_INVENTORY": "/etc/xensource-inventory",
    "XAPI_SOCKET": "/var/lib/xcp/xapi",
    "SYS_CLASS_NET": "/sys/class/net",
}
TOOL_KEYS = ("IPTABLES", "IP6TABLES", "EBTABLES", "ARPTABLES")
RESTORE_KEYS = ("IPTABLES_RESTORE", "IP6TABLES_RESTORE", "EBTABLES_RESTORE",
                "ARPTABLES_RESTORE")
SAVE_KEYS = ("IPTABLES_SAVE", "IP6TABLES_SAVE", "EBTABLES_SAVE", "ARPTABLES_SAVE")
KNOWN_KEYS = tuple(DEFAULTS.keys()) + RESTORE_KEYS + SAVE_KEYS

_KEY_CHARS = UPPER + DIGITS + "_"
_COMMAND_CHARS = LETTERS + DIGITS + "_./+-"


def _unquote(value, path, number):
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    elif value[:1] in "\"'":
        raise ConfigError(path, str(number), "unbalanced quote")
    return value


def _lines(path):
    """The file's lines as text, or None if there is no file. Bytes are read
    as latin-1 (never fails) and anything but printable ASCII is refused per
    line below: no locale decides whether the file can be read."""
    try:
        handle = open(path, "rb")
    except IOError:
        if current_exception().errno == errno.ENOENT:
            return None
        raise ConfigError(path, "-", "cannot read: %s" % current_exception())
    try:
        try:
            return to_text(handle.read()).split("\n")
        except (IOError, OSError):
            raise ConfigError(path, "-", "cannot read: %s" % current_exception())
    finally:
        handle.close()


def read_file(path):
    values = {}
    lines = _lines(path)
    if lines is None:
        return values
    number = 0
    for line in lines:
        number += 1
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if [c for c in line if not " " <= c <= "~" and c != "\t"]:
            raise ConfigError(path, str(number), "not printable ASCII: " + line)
        line = str(line)  # ASCII now: a plain str on Python 2 as before
        if line.startswith("export "):
            line = line[len("export "):].strip()
        parts = line.split("=", 1)
        key = parts[0]
        if len(parts) != 2 or not only(key[:1], UPPER) or not only(key, _KEY_CHARS):
            raise ConfigError(path, str(number), "expected KEY=value: " + line)
        if key not in KNOWN_KEYS:
            raise ConfigError(path, str(number), "unknown key " + key)
        values[key] = _unquote(parts[1], path, number)
    return values


class Config(object):
    def __init__(self, values=None, path=None):
        merged = dict(DEFAULTS)
        merged.update(values or {})
        self.path = path
        self.values = merged
        for key in TOOL_KEYS + RESTORE_KEYS + SAVE_KEYS:
            if key in merged and merged[key] and not only(merged[key], _COMMAND_CHARS):
                raise ConfigError(path or "-", key, "not a command name: " + merged[key])
        try:
            self.trusted_interfaces = parse_interface_list(merged["TRUSTED_INTERFACES"])
        except InvalidArgument:
            raise ConfigError(path or "-", "TRUSTED_INTERFACES",
                              "bad interface list: " + merged["TRUSTED_INTERFACES"])
        self.lock_timeout = _seconds(merged, "LOCK_TIMEOUT", path)
        self.command_timeout = _seconds(merged, "COMMAND_TIMEOUT", path)

    def get(self, key):
        return self.values[key]

    def tool(self, family):
        """The command for a family: 'iptables', 'ip6tables', 'ebtables', 'arptables'."""
        return self.values[family.upper()]

    def _derived(self, family, suffix):
        key = "%s_%s" % (family.upper(), suffix.upper())
        configured = self.values.get(key)
        if configured:
            return configured
        return "%s-%s" % (self.tool(family), suffix)

    def restore_tool(self, family):
        return self._derived(family, "restore")

    def save_tool(self, family):
        return self._derived(family, "save")

    def enabled(self, family):
        return bool(self.values[family.upper()])

    @property
    def state_dir(self):
        return self.values["STATE_DIR"]

    @property
    def lock_file(self):
        return self.values["LOCK_FILE"]


def _seconds(values, key, path):
    # Decimal text only: float() also takes inf, exponents and underscores.
    whole = values[key].split(".", 1)
    if not (decimal(whole[0], 5) and (len(whole) == 1 or only(whole[1], DIGITS))):
        raise ConfigError(path or "-", key, "not a number: " + values[key])
    seconds = float(values[key])
    if not seconds > 0:  # also refuses nan
        raise ConfigError(path or "-", key, "must be more than 0")
    return seconds


def config_path(environ=None):
    if environ is None:
        value = fs.getenv(ENV_VAR)  # not os.environ: the vif hook loads no os
    else:
        value = environ.get(ENV_VAR)
    return value or DEFAULT_PATH


def load(path=None):
    if path is None:
        path = config_path()
    return Config(read_file(path), path)
