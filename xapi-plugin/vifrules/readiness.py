"""Is this dom0 ready for vif-rules?  Item by item, and who provides what is missing.

check(cfg, root="/", run_commands=True) -> [item, ...], each item a dict:

  item         what is checked, e.g. "kernel option CONFIG_BRIDGE_EBT_ARP"
  ok           True only when the item is in place (state "ok")
  state        "ok"       in place
               "missing"  not in place: the host is not ready
               "pending"  not in place yet, but setup_host ('host-rules start')
                          puts it in place itself (the bridge-nf-call sysctls)
               "unknown"  cannot be told (no kernel config found, a match that
                          is neither listed nor decidable from the config);
                          reported, never counted as ready or as missing
               "skipped"  not applicable (family disabled in the config, not a
                          XenServer host, commands not run)
  detail       what was found
  provided_by  the pack component or setting that provides the item

Every file is read under `root` (tests point it at a fixture tree); `root`
is never used to run anything.  With run_commands=False nothing is executed.
The only commands run are read-only: '<tool> --version' / '-V', 'iptables -L
FORWARD -n', 'ebtables -t filter|nat -L', 'arptables -L FORWARD -n'.

A kernel option set to y or m counts as present.  Without /proc/config.gz and
/boot/config-<uname -r> every kernel option item is "unknown" (ok False, detail
"no kernel config found"); the runtime items (matches, tables) still decide.

Valid on Python 2.4 to 3.x (dom0).
"""

import gzip
import os

try:
    from io import BytesIO
except ImportError:  # Python 2.4/2.5
    from StringIO import StringIO as BytesIO

from vifrules import backend, ruleset
from vifrules.compat import to_text
from vifrules.errors import ConfigError, HostNotReady
from vifrules.runner import SEARCH_PATH, run
from vifrules.xapi import read_inventory

OK = "ok"
MISSING = "missing"
PENDING = "pending"
UNKNOWN = "unknown"
SKIPPED = "skipped"

KERNEL = "kernel-vifrules (pack kernel RPM)"
EBTABLES_RPM = "ebtables RPM in the pack"
ARPTABLES_RPM = "arptables RPM in the pack"
IPTABLES_RPM = "iptables RPM of dom0 (base system)"
SYSCTL_SETTER = "host-rules start (sets the sysctl)"
BRIDGE_BACKEND = "xe-switch-network-backend bridge|openvswitch"
OVS_PROVIDER = "openvswitch of dom0 (base system)"
OVS_TOOLS = ("ovs-vsctl", "ovs-ofctl")
# 'ovs-ofctl --bundle' (OpenFlow 1.4 bundles, 2.4) swaps a VIF's flows
# atomically; 2.5 (XenServer 7.x, Citrix Hypervisor 8.2, XCP-ng 8.2) is the
# oldest the suite has run on (ovs.py offers OpenFlow 1.4 where it is not).
OVS_BUNDLE_VERSION = (2, 5)
TC_PROVIDER = "iproute of dom0 (base system)"
# The device filter of a guest port (vifrules.devfilter): an ingress qdisc
# and a classic BPF filter run as a direct action (Linux 4.4, iproute2 4.4).
OVS_KERNEL_OPTIONS = ("CONFIG_NET_SCH_INGRESS", "CONFIG_NET_CLS_BPF")

TOOL_PROVIDERS = {"iptables": IPTABLES_RPM, "ip6tables": IPTABLES_RPM,
                  "ebtables": EBTABLES_RPM, "arptables": ARPTABLES_RPM}

# (option, the families that need it; None: always needed)
KERNEL_OPTIONS = (
    ("CONFIG_BRIDGE_NETFILTER", None),
    ("CONFIG_NETFILTER_XT_MATCH_PHYSDEV", ("iptables", "ip6tables")),
    ("CONFIG_BRIDGE_NF_EBTABLES", ("ebtables",)),
    ("CONFIG_BRIDGE_EBT_T_FILTER", ("ebtables",)),
    ("CONFIG_BRIDGE_EBT_T_NAT", ("ebtables",)),
    ("CONFIG_BRIDGE_EBT_IP", ("ebtables",)),
    ("CONFIG_BRIDGE_EBT_ARP", ("ebtables",)),
    ("CONFIG_BRIDGE_EBT_IP6", ("ebtables",)),
    ("CONFIG_IP_NF_ARPTABLES", ("arptables",)),
    ("CONFIG_IP_NF_ARPFILTER", ("arptables",)),
    ("CONFIG_IP6_NF_IPTABLES", ("ip6tables",)),
    ("CONFIG_IP6_NF_FILTER", ("ip6tables",)),
    ("CONFIG_NETFILTER_XT_MATCH_U32", ("ip6tables",)),
    ("CONFIG_NETFILTER_XT_MATCH_MAC", ("iptables", "ip6tables")),
    # ebtables' 'from' chain marks a guest's frames; iptables dispatches on it
    ("CONFIG_BRIDGE_EBT_MARK_T", ("ebtables",)),
    ("CONFIG_NETFILTER_XT_MATCH_MARK", ("iptables", "ip6tables")),
)

# Options that a kernel built without legacy ebtables cannot have, and that
# CONFIG_NF_TABLES_BRIDGE replaces when the configured ebtables is ebtables-nft.
NFT_EBTABLES_REPLACES = ("CONFIG_BRIDGE_EBT_T_FILTER", "CONFIG_BRIDGE_EBT_T_NAT")

# (family, match, kernel option, module); the matches the rules use.
MATCHES = (
    ("iptables", "physdev", "CONFIG_NETFILTER_XT_MATCH_PHYSDEV", "xt_physdev"),
    ("iptables", "mac", "CONFIG_NETFILTER_XT_MATCH_MAC", "xt_mac"),
    ("ip6tables", "physdev", "CONFIG_NETFILTER_XT_MATCH_PHYSDEV", "xt_physdev"),
    ("ip6tables", "mac", "CONFIG_NETFILTER_XT_MATCH_MAC", "xt_mac"),
    ("ip6tables", "u32", "CONFIG_NETFILTER_XT_MATCH_U32", "xt_u32"),
    ("iptables", "mark", "CONFIG_NETFILTER_XT_MATCH_MARK", "xt_mark"),
    ("ip6tables", "mark", "CONFIG_NETFILTER_XT_MATCH_MARK", "xt_mark"),
)
MATCH_FILES = {"iptables": "/proc/net/ip_tables_matches",
               "ip6tables": "/proc/net/ip6_tables_matches"}

ALL_FAMILIES = ("iptables", "ip6tables", "ebtables", "arptables")


# ---------------------------------------------------------------- helpers

def _under(root, path):
    """path inside the tree at root; "/" leaves it as it is."""
    if not root or root == "/":
        return path
    return os.path.join(root, path.lstrip("/"))


def _read_bytes(path):
    """The bytes of a file, or None when it cannot be read."""
    try:
        handle = open(path, "rb")
    except (IOError, OSError):
        return None
    try:
        try:
            return handle.read()
        except (IOError, OSError):
            return None
    finally:
        handle.close()


def _read(path):
    """The text of a file, or None when it cannot be read."""
    data = _read_bytes(path)
    if data is None:
        return None
    return to_text(data)


def _read_gzip(path):
    """A gzip file read whole first: /proc/config.gz has no size to seek to,
    which the gzip module of Python 2.4-2.6 relies on."""
    data = _read_bytes(path)
    if data is None:
        return None
    try:
        unzipped = gzip.GzipFile(fileobj=BytesIO(data), mode="rb")
        try:
            return to_text(unzipped.read())
        finally:
            unzipped.close()
    except (IOError, OSError, EOFError, ValueError):
        return None


def _item(name, state, detail, provided_by):
    return {"item": name, "ok": state == OK, "state": state,
            "detail": detail, "provided_by": provided_by}


def _families(cfg):
    enabled = []
    for family in ALL_FAMILIES:
        if cfg.enabled(family):
            enabled.append(family)
    return enabled


def _first_line(text):
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def kernel_release(root="/"):
    """uname -r of the host (or of the fixture tree, when it says)."""
    text = _read(_under(root, "/proc/sys/kernel/osrelease"))
    if text and text.strip():
        return text.strip()
    return os.uname()[2]


def parse_kernel_config(text):
    """{CONFIG_X: value}; '# CONFIG_X is not set' reads as 'n'."""
    options = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# CONFIG_") and line.endswith(" is not set"):
            options[line[2:-len(" is not set")]] = "n"
        elif line.startswith("CONFIG_") and "=" in line:
            key, value = line.split("=", 1)
            options[key] = value.strip().strip('"')
    return options


def read_kernel_config(root="/", release=None):
    """(options, source path) or (None, [paths looked at])."""
    if release is None:
        release = kernel_release(root)
    tried = ["/proc/config.gz", "/boot/config-%s" % release]
    text = _read_gzip(_under(root, tried[0]))
    if text is not None and text.strip():
        return parse_kernel_config(text), tried[0]
    text = _read(_under(root, tried[1]))
    if text is not None and text.strip():
        return parse_kernel_config(text), tried[1]
    return None, tried


def _search_dirs():
    dirs = []
    for part in (os.environ.get("PATH", "") + ":" + SEARCH_PATH).split(":"):
        if part and part.startswith("/") and part not in dirs:
            dirs.append(part)
    return dirs


def find_tool(name, root="/"):
    """The path of a command (under root), searching PATH, /sbin and /usr/sbin."""
    if "/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(d, name) for d in _search_dirs()]
    for candidate in candidates:
        path = _under(root, candidate)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _module_file(root, release, module):
    """A kernel module file under /lib/modules/<release>, or None."""
    base = _under(root, "/lib/modules/%s" % release)
    wanted = (module + ".ko", module + ".ko.gz", module + ".ko.xz", module + ".ko.zst")
    for sub in ("kernel/net", "extra", "updates"):
        top = os.path.join(base, sub)
        if not os.path.isdir(top):
            continue
        for directory, dirs, files in os.walk(top):
            for name in files:
                if name in wanted:
                    return os.path.join(directory, name)
    return None


def _loaded_modules(root):
    text = _read(_under(root, "/proc/modules"))
    if text is None:
        return None
    names = []
    for line in text.splitlines():
        if line.strip():
            names.append(line.split()[0])
    return names


def _command(argv):
    """(status, first line of output) of a read-only command."""
    status, out, err = run(argv, check=False)
    line = _first_line(out)
    if status != 0 or not line:
        line = _first_line(err) or line
    return status, line


# ---------------------------------------------------------------- the items

def _backend_item(cfg, root):
    """The backend the engine will use (backend.chosen) and how it was told."""
    name = "network backend"
    path = cfg.get("XENSOURCE_NETWORK_CONF")
    chosen, how = backend.chosen(cfg, root)
    if chosen is None:
        return _item(name, MISSING, how, BRIDGE_BACKEND)
    text = _read(_under(root, path))
    if cfg.get("BACKEND") == backend.AUTO and text is None and chosen == backend.BRIDGE:
        return _item(name, SKIPPED, "no %s: not a XenServer host" % path, BRIDGE_BACKEND)
    if text is not None and cfg.get("BACKEND") == backend.AUTO:
        how = path
    detail = "%s (%s)" % (chosen, how)
    if chosen == backend.OPENVSWITCH:
        detail = detail + ": OpenFlow flows per VIF"
    return _item(name, OK, detail, BRIDGE_BACKEND)


def _is_openvswitch(cfg, root):
    try:
        return backend.chosen(cfg, root)[0] == backend.OPENVSWITCH
    except ConfigError:
        return False


def _version_tuple(line):
    """'ovs-ofctl (Open vSwitch) 3.1.0' -> (3, 1, 0), or None."""
    for word in line.split():
        parts = word.split(".")
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            return tuple([int(p) for p in parts if p.isdigit()])
    return None


def _ovs_items(cfg, root, run_commands):
    """What an Open vSwitch host needs: the tools, a version with bundles,
    a database that answers, and the trusted uplinks on a bridge."""
    items = []
    found = {}
    for tool in OVS_TOOLS:
        path = find_tool(tool, root)
        if path is None:
            items.append(_item("%s tool" % tool, MISSING, "%s not found on PATH, /sbin or "
                               "/usr/sbin" % tool, OVS_PROVIDER))
            continue
        found[tool] = path
        if not run_commands:
            items.append(_item("%s tool" % tool, OK, "%s at %s" % (tool, path), OVS_PROVIDER))
            continue
        status, line = _command([tool, "--version"])
        version = _version_tuple(line)
        if status != 0 or version is None:
            items.append(_item("%s tool" % tool, MISSING, "%s at %s does not run: %s"
                               % (tool, path, line or "status %d" % status), OVS_PROVIDER))
        elif version < OVS_BUNDLE_VERSION:
            items.append(_item("%s tool" % tool, MISSING, "%s: the flows need Open "
                               "vSwitch %d.%d or later" % ((line,) + OVS_BUNDLE_VERSION),
                               OVS_PROVIDER))
        else:
            items.append(_item("%s tool" % tool, OK, "%s at %s: %s" % (tool, path, line),
                               OVS_PROVIDER))
    name = "Open vSwitch database"
    if not run_commands or "ovs-vsctl" not in found:
        items.append(_item(name, SKIPPED, "not probed (commands not run)", OVS_PROVIDER))
        return items
    status, out, err = run(["ovs-vsctl", "--timeout=5", "show"], check=False)
    if status != 0:
        items.append(_item(name, MISSING, "'ovs-vsctl show' failed (%d): %s" % (
            status, _first_line(err) or _first_line(out)), OVS_PROVIDER))
        return items
    items.append(_item(name, OK, "'ovs-vsctl show' works", OVS_PROVIDER))
    for uplink in cfg.trusted_interfaces:
        label = "trusted uplink %s" % uplink
        status, out, err = run(["ovs-vsctl", "--timeout=5", "iface-to-br", uplink], check=False)
        if status == 0:
            items.append(_item(label, OK, "on bridge %s" % _first_line(out), OVS_PROVIDER))
        else:
            items.append(_item(label, MISSING, "on no Open vSwitch bridge: its traffic would "
                               "be dropped", "TRUSTED_INTERFACES in the configuration"))
    items.append(_management_item(cfg, root))
    return items


def _tc_items(root, run_commands, options, source):
    """What the device filter of a guest port needs: tc that runs a BPF
    filter as a direct action, and the kernel's ingress qdisc and BPF
    classifier."""
    items = []
    path = find_tool("tc", root)
    if path is None:
        items.append(_item("tc tool", MISSING, "tc not found on PATH, /sbin or /usr/sbin",
                           TC_PROVIDER))
    elif not run_commands:
        items.append(_item("tc tool", OK, "tc at %s" % path, TC_PROVIDER))
    else:
        status, out, err = run(["tc", "filter", "add", "bpf", "help"], check=False)
        if "direct-action" in out + err:
            items.append(_item("tc tool", OK, "tc at %s runs BPF filters as direct "
                               "actions" % path, TC_PROVIDER))
        else:
            items.append(_item("tc tool", MISSING, "tc at %s cannot run a BPF filter as a "
                               "direct action (iproute2 4.4 or later needed)" % path,
                               TC_PROVIDER))
    items.extend([_option_item(option, options, source) for option in OVS_KERNEL_OPTIONS])
    return items


def _management_item(cfg, root):
    """dom0 talks to the pool and the controller through the bridge the
    inventory names (MANAGEMENT_INTERFACE, e.g. xenbr0); on Open vSwitch
    only trusted ports forward, so every uplink of that bridge must be
    trusted, or start cuts the host off its own network."""
    label = "management uplink"
    inventory = cfg.get("XENSOURCE_INVENTORY")
    try:
        bridge = read_inventory(_under(root, inventory)).get("MANAGEMENT_INTERFACE")
    except HostNotReady:
        bridge = None
    if not bridge:
        return _item(label, SKIPPED, "no MANAGEMENT_INTERFACE in %s" % inventory, OVS_PROVIDER)
    status, out, err = run(["ovs-vsctl", "--timeout=5", "br-to-parent", bridge], check=False)
    if status != 0:
        return _item(label, UNKNOWN, "MANAGEMENT_INTERFACE=%s is no Open vSwitch bridge: "
                     "cannot tell which uplink carries dom0's traffic" % bridge,
                     "TRUSTED_INTERFACES in the configuration")
    parent = _first_line(out)
    status, out, err = run(["ovs-vsctl", "--timeout=5", "list-ports", parent], check=False)
    if status != 0:
        return _item(label, UNKNOWN, "'ovs-vsctl list-ports %s' failed (%d): %s" % (
            parent, status, _first_line(err)), OVS_PROVIDER)
    uplinks = [port for port in out.split() if not (
        port.startswith("vif") or port.startswith("tap"))]
    untrusted = [port for port in uplinks if port not in cfg.trusted_interfaces]
    if untrusted:
        return _item(label, MISSING, "dom0's management traffic (MANAGEMENT_INTERFACE=%s, "
                     "bridge %s) leaves through %s, not in TRUSTED_INTERFACES: start would "
                     "cut the host off its network" % (bridge, parent, " ".join(untrusted)),
                     "TRUSTED_INTERFACES in the configuration")
    return _item(label, OK, "MANAGEMENT_INTERFACE=%s on bridge %s: uplinks %s trusted" % (
        bridge, parent, " ".join(uplinks) or "(none)"), OVS_PROVIDER)


def _not_used(items):
    """The netfilter items, on a host where the OpenFlow backend does the work."""
    return [_item(i["item"], SKIPPED, "not used by the openvswitch backend", i["provided_by"])
            for i in items]


def _ebtables_is_nft(cfg, root, versions):
    version = versions.get("ebtables") or ""
    if "nf_tables" in version:
        return True
    found = find_tool(cfg.tool("ebtables"), root)
    return bool(found) and "nft" in os.path.basename(os.path.realpath(found))


def _kernel_items(cfg, root, families, release, options, source, versions):
    items = [_kernel_source_item(release, options, source)]
    for option, needed_by in KERNEL_OPTIONS:
        if needed_by is not None and not [f for f in needed_by if f in families]:
            items.append(_item("kernel option %s" % option, SKIPPED, "needed only by %s, "
                               "disabled in the config" % "/".join(needed_by), KERNEL))
            continue
        item = _option_item(option, options, source)
        if (item["state"] == MISSING and option in NFT_EBTABLES_REPLACES
                and options.get("CONFIG_NF_TABLES_BRIDGE") in ("y", "m")
                and _ebtables_is_nft(cfg, root, versions)):
            item = _item(item["item"], OK, "%s; CONFIG_NF_TABLES_BRIDGE=%s serves the "
                         "configured ebtables-nft instead"
                         % (item["detail"], options["CONFIG_NF_TABLES_BRIDGE"]), KERNEL)
        items.append(item)
    return items


def _option_item(option, options, source):
    """One kernel option, read from the kernel's config (None: none found)."""
    name = "kernel option %s" % option
    if options is None:
        return _item(name, UNKNOWN, "no kernel config found (%s)" % ", ".join(source), KERNEL)
    value = options.get(option)
    if value in ("y", "m"):
        return _item(name, OK, "=%s (%s)" % (value, source), KERNEL)
    if value is None:
        return _item(name, MISSING, "absent from %s" % source, KERNEL)
    return _item(name, MISSING, "is not set in %s" % source, KERNEL)


def _kernel_source_item(release, options, source):
    if options is None:
        return _item("kernel config", UNKNOWN, "no kernel config found (%s)"
                     % ", ".join(source), KERNEL)
    return _item("kernel config", OK, "%s for %s" % (source, release), KERNEL)


def _bridge_items(cfg, root):
    base = cfg.get("PROC_SYS")
    directory = os.path.join(base, "net/bridge")
    items = []
    if os.path.isdir(_under(root, directory)):
        items.append(_item(directory, OK, "present", KERNEL))
    else:
        hint = ""
        modules = _loaded_modules(root)
        if modules is not None:
            loaded = [m for m in ("bridge", "br_netfilter") if m in modules]
            hint = "; loaded: %s" % (", ".join(loaded) or "neither bridge nor br_netfilter")
        items.append(_item(directory, MISSING, "absent (bridge netfilter not in the "
                           "kernel, or bridge/br_netfilter not loaded%s)" % hint, KERNEL))
    for name in ruleset.host_sysctls():
        label = "sysctl %s" % name.replace("/", ".")
        text = _read(_under(root, os.path.join(base, name)))
        if text is None:
            items.append(_item(label, MISSING, "%s absent" % os.path.join(base, name), KERNEL))
        elif text.strip() == "1":
            items.append(_item(label, OK, "1", SYSCTL_SETTER))
        else:
            items.append(_item(label, PENDING, "%s, not 1" % (text.strip() or "empty"),
                               SYSCTL_SETTER))
    return items


def _match_items(root, families, release, options):
    items = []
    for family, match, option, module in MATCHES:
        name = "%s %s match" % (family, match)
        if family not in families:
            items.append(_item(name, SKIPPED, "%s disabled in the config" % family, KERNEL))
            continue
        listing_path = MATCH_FILES[family]
        listing = _read(_under(root, listing_path))
        if listing is not None and match in listing.split():
            items.append(_item(name, OK, "listed in %s" % listing_path, KERNEL))
            continue
        value = None
        if options is not None:
            value = options.get(option)
        if value == "y":
            items.append(_item(name, OK, "built in (%s=y)" % option, KERNEL))
        elif value == "m":
            path = _module_file(root, release, module)
            if path:
                items.append(_item(name, OK, "module %s available, loaded on first use (%s)"
                                   % (module, path), KERNEL))
            else:
                items.append(_item(name, MISSING, "%s=m but no %s module under "
                                   "/lib/modules/%s" % (option, module, release), KERNEL))
        elif options is not None:
            items.append(_item(name, MISSING, "not listed in %s and %s is not set"
                               % (listing_path, option), KERNEL))
        else:
            items.append(_item(name, UNKNOWN, "not listed in %s (not loaded?) and no "
                               "kernel config found" % listing_path, KERNEL))
    return items


def _tool_items(cfg, root, families, run_commands, versions):
    items = []
    for family in ALL_FAMILIES:
        provider = TOOL_PROVIDERS[family]
        if family not in families:
            items.append(_item("%s tool" % family, SKIPPED,
                               "disabled in the config (%s is empty)" % family.upper(),
                               provider))
            continue
        tools = [("%s tool" % family, cfg.tool(family), 1)]
        if family in ruleset.FAMILIES:  # the engine batches these through restore/save
            tools.append(("%s restore tool" % family, cfg.restore_tool(family), 0))
            tools.append(("%s save tool" % family, cfg.save_tool(family), 0))
        for label, command, main in tools:
            path = find_tool(command, root)
            if path is None:
                items.append(_item(label, MISSING, "%s not found on PATH, /sbin or /usr/sbin"
                                   % command, provider))
                continue
            if not main or not run_commands:
                items.append(_item(label, OK, "%s at %s" % (command, path), provider))
                continue
            status, line = _command([command, "--version"])
            if status != 0 or not line:
                status, line = _command([command, "-V"])
            if status != 0:
                items.append(_item(label, MISSING, "%s at %s does not run: %s"
                                   % (command, path, line or "status %d" % status), provider))
                continue
            versions[family] = line
            items.append(_item(label, OK, "%s at %s: %s" % (command, path, line), provider))
    return items


def _table_items(cfg, root, families, run_commands):
    probes = (
        ("iptables", "iptables filter table", ("-t", "filter", "-L", "FORWARD", "-n"),
         KERNEL),
        ("ip6tables", "ip6tables filter table", ("-t", "filter", "-L", "FORWARD", "-n"),
         KERNEL),
        ("ebtables", "ebtables filter table", ("-t", "filter", "-L"), KERNEL),
        ("ebtables", "ebtables nat table", ("-t", "nat", "-L"), KERNEL),
        ("arptables", "arptables FORWARD chain", ("-L", "FORWARD", "-n"), KERNEL),
    )
    items = []
    for family, name, args, provider in probes:
        if family not in families:
            items.append(_item(name, SKIPPED, "%s disabled in the config" % family, provider))
            continue
        if not run_commands:
            items.append(_fixture_table_item(root, family, name, provider))
            continue
        command = cfg.tool(family)
        status, out, err = run([command] + list(args), check=False)
        if status != 0:
            items.append(_item(name, MISSING, "'%s %s' failed (%d): %s"
                               % (command, " ".join(args), status,
                                  _first_line(err) or _first_line(out)), provider))
        elif family == "arptables" and "FORWARD" not in out:
            items.append(_item(name, MISSING, "'%s %s' shows no FORWARD chain: %s"
                               % (command, " ".join(args), _first_line(out)), provider))
        else:
            items.append(_item(name, OK, "'%s %s' works" % (command, " ".join(args)),
                               provider))
    return items


def _fixture_table_item(root, family, name, provider):
    """Without commands only a loaded arptables filter table can be seen."""
    if family == "arptables":
        names = _read(_under(root, "/proc/net/arp_tables_names"))
        if names is not None and "filter" in names.split():
            return _item(name, OK, "filter table listed in /proc/net/arp_tables_names",
                         provider)
    return _item(name, SKIPPED, "not probed (commands not run)", provider)


# ---------------------------------------------------------------- the API

def check(cfg, root="/", run_commands=True):
    """Inspect the host (files under root); return the list of items."""
    families = _families(cfg)
    release = kernel_release(root)
    options, source = read_kernel_config(root, release)
    versions = {}
    tools = _tool_items(cfg, root, families, run_commands, versions)
    items = [_backend_item(cfg, root)]
    netfilter = _kernel_items(cfg, root, families, release, options, source, versions)
    netfilter.extend(_bridge_items(cfg, root))
    netfilter.extend(_match_items(root, families, release, options))
    netfilter.extend(tools)
    netfilter.extend(_table_items(cfg, root, families, run_commands))
    if _is_openvswitch(cfg, root):
        return items + _ovs_items(cfg, root, run_commands) + \
            _tc_items(root, run_commands, options, source) + _not_used(netfilter)
    return items + netfilter


def not_ready(items, for_setup=False):
    """The items that make the host not ready.

    for_setup=True leaves out what setup_host puts in place itself (the
    "pending" sysctls); "unknown" and "skipped" items never count.
    """
    states = [MISSING]
    if not for_setup:
        states.append(PENDING)
    return [i for i in items if i["state"] in states]


def is_ready(items):
    return not not_ready(items)


TAGS = {OK: "[ OK ]", MISSING: "[FAIL]", PENDING: "[FAIL]", UNKNOWN: "[ ?? ]",
        SKIPPED: "[SKIP]"}


def format_report(items):
    """Text lines, one per item, then a summary line."""
    lines = []
    for item in items:
        line = "%s %s: %s" % (TAGS[item["state"]], item["item"], item["detail"])
        if item["state"] in (MISSING, PENDING, UNKNOWN):
            line = "%s -> provided by %s" % (line, item["provided_by"])
        lines.append(line)
    failing = not_ready(items)
    unknown = [i for i in items if i["state"] == UNKNOWN]
    if failing:
        summary = "NOT READY: %d item(s) missing" % len(failing)
    else:
        summary = "READY"
    if unknown:
        summary = "%s; %d item(s) unknown" % (summary, len(unknown))
    lines.append(summary)
    return lines


def require_bridge_backend(cfg, root="/"):
    """The cheap part of require_ready, for every host-rules start: a backend
    vif-rules knows and, on Open vSwitch, a switch that answers."""
    items = [_backend_item(cfg, root)]
    if _is_openvswitch(cfg, root):
        items.extend([i for i in _ovs_items(cfg, root, True) if i["item"] in (
            "ovs-vsctl tool", "ovs-ofctl tool", "Open vSwitch database")])
    _refuse_first(items)


def _refuse_first(items):
    missing = not_ready(items, for_setup=True)
    if missing:
        item = missing[0]
        raise HostNotReady("%s: %s" % (item["item"], item["detail"]),
                           "provided by %s" % item["provided_by"])


def require_ready(cfg, root="/", run_commands=True):
    """Raise HostNotReady(what, how) unless setup_host can protect this host.

    The first missing item (the backend comes first), with the pack
    component or setting that provides it.  The sysctls are not required
    here: setup_host sets them.  Returns the items otherwise.
    """
    items = check(cfg, root, run_commands)
    _refuse_first(items)
    return items
