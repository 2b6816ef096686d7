"""Patch XenServer's vif script so that it calls the vif-rules hook on every
VIF event; revert it byte for byte; say which state it is in.

    vif-patch apply|revert|status [--script FILE] [--hook PATH] [--root DIR]

Each generation of the vif script (5.5 to 8.3) is known by anchor lines, kept
here exactly as the real scripts have them (whitespace included): a Site is
the lines just before and just after one place where the patch inserts its
lines, and it must occur exactly once. The patch adds one shell function,
vif_rules_hook, before the script's event `case` and one call of it per
event arm. Everything we add is marked, so an older patch of ours can be
taken off again; the pristine script is kept under /var/lib/vif-rules/pristine/.
patches/README.md has the contract, patches/vif-*.patch the same edits as
unified diffs.
"""

import os
import sys

from vifrules.compat import current_exception, to_text
from vifrules.errors import InvalidArgument, StateError
from vifrules.log import syslog_logger
from vifrules.runner import run

PATCH_VERSION = "1"
DEFAULT_HOOK = "/etc/xensource/scripts/vif_rules.py"
PRISTINE_DIR = "/var/lib/vif-rules/pristine"
# In the order they are looked for: xenopsd's (6.5 on), then xapi's (5.5-6.2).
SCRIPT_PATHS = ("/usr/libexec/xenopsd/vif-real", "/etc/xensource/scripts/vif")

PATCHED, NOT_PATCHED, UNKNOWN, CHANGED = "patched", "not-patched", "unknown", "changed"
STATUS_EXIT = {PATCHED: 0, NOT_PATCHED: 1, UNKNOWN: 3, CHANGED: 4}
EXIT_USAGE, EXIT_UNKNOWN, EXIT_CHANGED = 2, 3, 4

USAGE = "usage: vif-patch apply|revert|status [--script FILE] [--hook PATH] [--root DIR]"

BLOCK_BEGIN = "# vif-rules hook (vif-patch %s): begin"
BLOCK_BEGIN_PREFIX = "# vif-rules hook (vif-patch "
BLOCK_END = "# vif-rules hook: end"
CALL_WORD = "vif_rules_hook "
HOOK_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./+-"

# The function the patch adds. It keeps the status the script had before the
# call ($? on entry), so a call as an arm's last command, or before a $? test,
# changes nothing for the script; the hook's own failure is only logged.
HOOK_FUNCTION = """%(begin)s
# Added by vif-patch (vif-rules): call the vif-rules hook for this event. Its
# stderr goes to syslog; if it fails, the port stays closed (the host's
# default DROP) and that is logged. The script's own status is kept.
vif_rules_hook()
{
    local vif_rules_status=$? vif_rules_result=0 vif_rules_err
    vif_rules_err=$("%(hook)s" "$1" "$2" 2>&1 >/dev/null) || vif_rules_result=$?
    if [ -n "${vif_rules_err}" ]; then
        printf '%%s\\n' "${vif_rules_err}" | logger -t vif-rules || true
    fi
    if [ ${vif_rules_result} -ne 0 ]; then
        logger -t vif-rules "$1 $2: hook failed (status ${vif_rules_result}), the port stays closed" || true
    fi
    return ${vif_rules_status}
}
%(end)s
"""


class Site(object):
    """One place of the patch: exactly these lines before it and after it."""

    def __init__(self, before, after, insert):
        self.before = list(before)
        self.after = list(after)
        self.insert = list(insert)

    def positions(self, lines):
        found = []
        size_b = len(self.before)
        size_a = len(self.after)
        i = size_b
        while i + size_a <= len(lines):
            if lines[i - size_b:i] == self.before and lines[i:i + size_a] == self.after:
                found.append(i)
            i += 1
        return found


class Generation(object):
    """One vif script generation: its sites, and lines (by their start) that
    tell it from its neighbours."""

    def __init__(self, name, releases, sites, requires=(), forbids=()):
        self.name = name
        self.releases = releases
        self.sites = sites
        self.requires = requires
        self.forbids = forbids

    def mismatch(self, lines):
        """None if the script is of this generation, else what does not fit."""
        for prefix in self.requires:
            if not _has_line_starting(lines, prefix):
                return "no line starting %r" % prefix
        for prefix in self.forbids:
            if _has_line_starting(lines, prefix):
                return "a line starting %r" % prefix
        for site in self.sites:
            count = len(site.positions(lines))
            if count != 1:
                return "%d times (not once): %r" % (count, (site.before + site.after)[0])
        return None


def _has_line_starting(lines, prefix):
    for line in lines:
        if line.startswith(prefix):
            return True
    return False


# ---------------------------------------------------------------- the generations

TAB = "\t"
SP4 = " " * 4
SP8 = " " * 8
_CONNECTED_LITERAL = ('xenstore-write "/local/domain/0/backend/vif/${DOMID}/${DEVID}/hotplug-status"'
                      ' "connected"')
_CONNECTED_VAR = 'xenstore-write "${HOTPLUG_STATUS}" "connected"'
_CALL_HOOK_SCRIPT = 'call_hook_script $DOMID "${ACTION}"'
_IF_VIF = 'if [ "${TYPE}" = "vif" ] ;then'
_IF_TAP = 'if [ "${TYPE}" = "tap" ] ; then'
_RM_HOTPLUG = 'xenstore-rm "${HOTPLUG}/hotplug"'
_UNCLEAR = "\t\t# Unclear whether this is necessary, since netback also does it:"
_DEV = '"${dev}"'


def _call(indent, action, dev):
    return indent + CALL_WORD + action + " " + dev


def _function_site(case_line):
    """The hook function goes just before the script's event case."""
    return Site([], [case_line], ["@FUNCTION@"])


def _online_site(before, after, indent, dev):
    return Site(before, after, [_call(indent, "online", dev)])


def _remove_site(after, indent, dev):
    """The remove call is the arm's first command: the port is torn down in the
    hook whether or not the bridge removal that follows succeeds."""
    return Site(["remove)"], after, [_call(indent, "offline", dev)])


def _tap_add_site(inner, before_add, after_add=()):
    """The tap call goes last in the tap-only add arm, after add_to_bridge."""
    outer = inner[:-len(SP4)]
    before = ["add)", outer + _IF_TAP] + before_add + [inner + "add_to_bridge"] + list(after_add)
    return Site(before, [outer + "fi"], [_call(inner, "add", _DEV)])


def _move_site(after_add=()):
    return Site(["move)", SP4 + _IF_VIF, SP8 + "add_to_bridge"] + list(after_add), [SP4 + "fi"],
                [_call(SP8, "online", _DEV)])


def _xapi_sites(indent):
    """B and C: the online anchor is the literal hotplug-status path."""
    outer = indent[:-len(SP4)]
    return [
        _function_site('case "${ACTION}" in'),
        _online_site([indent + _CONNECTED_LITERAL], [outer + "fi"], indent, _DEV),
        _tap_add_site(indent, []),
        _remove_site([outer + _IF_VIF, indent + _RM_HOTPLUG], outer, _DEV),
    ]


def _hook_script_sites(remove_after, tap_before_add, after_add=()):
    """D, E and F: online ends with XenServer's own call_hook_script."""
    return [
        _function_site('case "${ACTION}" in'),
        _online_site([SP8 + _CONNECTED_VAR, SP8 + _CALL_HOOK_SCRIPT], [SP4 + "fi", SP4 + ";;"],
                     SP8, _DEV),
        _tap_add_site(SP8, tap_before_add, after_add),
        _remove_site(remove_after, SP4, _DEV),
        _move_site(after_add),
    ]


_REMOVE_HOOK_FIRST = [SP4 + _IF_VIF, SP8 + _CALL_HOOK_SCRIPT, _UNCLEAR]
_REMOVE_BRIDGE_FIRST = [SP4 + "remove_from_bridge", SP4 + _IF_VIF, SP8 + _CALL_HOOK_SCRIPT]
_VIF_REAL_ARGS = "TYPE=$1"
_E_SETUP_VIF_RULES = "setup_vif_rules="

GENERATIONS = (
    Generation("A", "XenServer 5.5.0, 5.5 Update 1/2", [
        _function_site('case "$1" in'),
        _online_site([TAB + _CONNECTED_LITERAL], ["", TAB + ";;"], TAB, '"vif${DOMID}.${DEVID}"'),
        _remove_site([TAB + _RM_HOTPLUG], TAB, '"vif${DOMID}.${DEVID}"'),
    ]),
    Generation("B", "XenServer 5.6 beta, 5.6.0", _xapi_sites(TAB + SP4), forbids=("move)",)),
    Generation("C", "XenServer 5.6 FP1", _xapi_sites(SP8), forbids=("move)",)),
    Generation("C2", "XenServer 5.6 SP2", _xapi_sites(SP8) + [_move_site()]),
    Generation("D", "XenServer 6.0", _hook_script_sites(_REMOVE_HOOK_FIRST, []),
               forbids=(_E_SETUP_VIF_RULES, _VIF_REAL_ARGS)),
    Generation("E", "XenServer 6.1, 6.2", _hook_script_sites(_REMOVE_HOOK_FIRST, []),
               requires=(_E_SETUP_VIF_RULES,), forbids=(_VIF_REAL_ARGS,)),
    Generation("F-6.5", "XenServer 6.5, 7.0 (vif-real)", _hook_script_sites(_REMOVE_HOOK_FIRST, []),
               requires=(_VIF_REAL_ARGS,)),
    Generation("F-7.1", "XenServer 7.1-7.5 (vif-real)",
               _hook_script_sites(_REMOVE_BRIDGE_FIRST, []),
               requires=(_VIF_REAL_ARGS,)),
    Generation("F-7.6", "XenServer 7.6-8.x, XCP-ng 7.6-8.3 (vif-real)",
               _hook_script_sites(_REMOVE_BRIDGE_FIRST, [SP8 + "handle_mtu"]),
               requires=(_VIF_REAL_ARGS,)),
    Generation("F-trunks", "xen-api master from 2026-03 (VLAN filtering on VIF; vif-real)",
               _hook_script_sites(_REMOVE_BRIDGE_FIRST, [SP8 + "handle_mtu"],
                                  [SP8 + "handle_trunks"]),
               requires=(_VIF_REAL_ARGS,)),
)

# md5 of released scripts as installed (see patches/README.md for where each
# comes from). A known checksum names the generation; its anchors must still fit.
KNOWN_MD5 = {
    "b8e9835862ef1a9cec2a3f477d26c989": ("A", "XenServer 5.5.0, Update 1, Update 2"),
    "f5c85ca825b1e6f5a0845530981cd836": ("B", "XenServer 5.5.900-29381p (5.6 beta)"),
    "1a525b9ae361158a38f0a3992972f05c": ("B", "xen-api eb66e1b1e4, 2010-03"),
    "06a1e09c9ba00e63beb4e2b3110e73ae": ("C", "xen-api dd21a1b943, 2010-07 (5.6 FP1 era)"),
    "63bef49cf45b3ed167d2de6f1c2d89cd": ("C", "xen-api 6c6a8e0047, 2010-10 (5.6 FP1 era)"),
    "751c95df252024791a2e754151bf3264": ("C", "xen-api 3712456f97, 2010-10 (5.6 FP1 era)"),
    "c5f48246577a17cf1b971fb5ce4e920b": ("C", "xen-api f3ec1908a2, 2011-01 (5.6 FP1 era)"),
    "8c802b9e2c5265a0de668df94886aeee": ("C2", "xen-api 353509e051, 2011-04 (5.6 SP2 era)"),
    "031bef0048e099f0d248e30ce1fe619b": ("D", "xen-api e3faaecfbf, 2011-09 (6.0 era)"),
    "4dad13eee68460c94c213bb8ab9d9d7a": ("E", "xen-api tags XS61, XS62 (as installed)"),
    "fa0f07482d842be93ed93ec225cbb1ed": ("F-6.5", "xenopsd v0.9.46 (XenServer 6.5)"),
    "99ced542fe50b6545c52c8289e8f2d16": ("F-6.5", "xenopsd v0.12.0"),
    "9256ccef287a682b6274a9f4273ac008": ("F-7.1", "xenopsd v0.17.0 (XenServer 7.1)"),
    "357a72ee3145f310fc1c7ec03347b348": ("F-7.1", "xenopsd v0.20.0"),
    "fe963a231c2e2f7faea96535dc78eb3a": ("F-7.1", "xenopsd v0.52.1 (XenServer 7.5)"),
    "2e63931d92ae45462daba78d1a732570": ("F-7.6", "xenopsd v0.17.25 (XenServer 7.1 LCM)"),
    "2fd2f8f4730ec743077786c2515be90d": ("F-7.6", "xenopsd v0.66.0-v0.150.19 (XenServer 7.6-8.2)"),
    "1935276e1080a6ce6f9c9659d6afad05": ("F-7.6",
                                         "xen-api v24.19.2-v26.4.0 (XenServer 8, XCP-ng 8.3)"),
}


def generation_named(name):
    for generation in GENERATIONS:
        if generation.name == name:
            return generation
    return None


# ---------------------------------------------------------------- pure text work

def _lines(text):
    return text.split("\n")


def is_ours(text):
    """Does the script carry anything vif-patch adds?"""
    for line in _lines(text):
        if line.startswith(BLOCK_BEGIN_PREFIX) or line.lstrip().startswith(CALL_WORD):
            return True
    return False


def strip_ours(text):
    """The script without every line vif-patch (any version) added."""
    out = []
    inside = False
    after_block = False
    for line in _lines(text):
        if after_block and line == "":
            after_block = False  # the blank line that ends our block
            continue
        after_block = False
        if inside:
            if line == BLOCK_END:
                inside = False
                after_block = True
        elif line.startswith(BLOCK_BEGIN_PREFIX):
            inside = True
        elif not line.lstrip().startswith(CALL_WORD):
            out.append(line)
    return "\n".join(out)


def recognise(text, md5=None):
    """The Generation of an unpatched script, or None. A known checksum is
    looked up first; otherwise exactly one generation's anchors must fit."""
    lines = _lines(text)
    if md5 in KNOWN_MD5:
        generation = generation_named(KNOWN_MD5[md5][0])
        if generation.mismatch(lines) is None:
            return generation
        return None
    fitting = []
    for generation in GENERATIONS:
        if generation.mismatch(lines) is None:
            fitting.append(generation)
    if len(fitting) == 1:
        return fitting[0]
    return None


def why_unknown(text):
    """One line on the nearest generation and what of it is missing."""
    lines = _lines(text)
    best = None
    for generation in GENERATIONS:
        fits = 0
        for site in generation.sites:
            if len(site.positions(lines)) == 1:
                fits += 1
        if best is None or fits > best[0]:
            best = (fits, generation)
    generation = best[1]
    return "nearest is generation %s (%s): %s" % (
        generation.name, generation.releases, generation.mismatch(lines))


def hook_function(hook):
    return HOOK_FUNCTION % {"begin": BLOCK_BEGIN % PATCH_VERSION, "end": BLOCK_END, "hook": hook}


def patched_text(text, generation, hook):
    """text (an unpatched script of generation) with the hook calls added."""
    lines = _lines(text)
    edits = []
    for site in generation.sites:
        where = site.positions(lines)
        if len(where) != 1:
            raise StateError("vif script", "generation %s anchor found %d times"
                             % (generation.name, len(where)))
        insert = []
        for line in site.insert:
            if line == "@FUNCTION@":
                insert.extend(_lines(hook_function(hook)))
            else:
                insert.append(line)
        edits.append((where[0], insert))
    edits.sort()
    edits.reverse()
    for at, insert in edits:
        lines[at:at] = insert
    return "\n".join(lines)


def check_hook(hook):
    odd = [char for char in hook if char not in HOOK_CHARS]
    if not hook.startswith("/") or odd or "//" in hook or "/../" in hook + "/":
        raise InvalidArgument("--hook", hook, "an absolute path of A-Za-z0-9_./+- only")
    return hook


# ---------------------------------------------------------------- files

def _under(root, path):
    if not root or root == "/":
        return path
    return os.path.join(root, path.lstrip("/"))


def find_script(root="/"):
    """The host's vif script: vif-real if present, else the xapi one."""
    for path in SCRIPT_PATHS:
        if os.path.exists(_under(root, path)):
            return _under(root, path)
    return _under(root, SCRIPT_PATHS[-1])


def pristine_path(script, root="/"):
    """Where the pristine copy of script is kept: its path under PRISTINE_DIR."""
    script = os.path.abspath(script)
    inside = script
    if root and root != "/":
        top = os.path.abspath(root)
        if script.startswith(top + os.sep):
            inside = script[len(top):]
    return _under(root, PRISTINE_DIR + "/" + inside.lstrip("/"))


def _read(path):
    """The text of path (bytes 1:1 as latin-1), or None if it does not exist."""
    if not os.path.exists(path):
        return None
    try:
        handle = open(path, "rb")
        try:
            return to_text(handle.read())
        finally:
            handle.close()
    except (IOError, OSError):
        raise StateError(path, "cannot read: %s" % current_exception())


def _md5(path):
    """md5 of a file by md5sum (no hashlib on Python 2.4), or None."""
    try:
        status, out, err = run(["md5sum", path], check=False)
    except (OSError, IOError):
        return None
    if status != 0 or not out:
        return None
    return out.split()[0]


def _write(path, text, like=None):
    """Replace path with text at once (rename): a vif script udev is running
    keeps reading the old file. Mode and owner come from like (or path)."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory)
        except OSError:
            raise StateError(directory, "cannot create: %s" % current_exception())
    temporary = path + ".vif-patch-new"
    try:
        handle = open(temporary, "wb")
        try:
            # latin-1 both ways: every byte of the script comes back as it was
            handle.write(text.encode("latin-1"))
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            handle.close()
        source = like or path
        if os.path.exists(source):
            info = os.stat(source)
            os.chmod(temporary, info.st_mode & 4095)
            if os.getuid() == 0:
                os.chown(temporary, info.st_uid, info.st_gid)
        os.rename(temporary, path)
    except (IOError, OSError):
        error = current_exception()
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise StateError(path, "cannot write: %s" % error)


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        raise StateError(path, "cannot remove: %s" % current_exception())


# ---------------------------------------------------------------- states

class Examined(object):
    """What the script and its kept copy say: state, generation (or None),
    the texts, and whether the script carries lines of ours."""

    def __init__(self, script, root):
        self.script = script
        self.kept_path = pristine_path(script, root)
        self.text = _read(script)
        self.kept = _read(self.kept_path)
        self.ours = self.text is not None and is_ours(self.text)
        self.generation = None
        self.state = self._state()

    def _state(self):
        if self.kept is not None:
            self.generation = recognise(self.kept, _md5(self.kept_path))
            if self.text is None:
                return CHANGED
            if self.ours and strip_ours(self.text) == self.kept:
                return PATCHED
            if not self.ours and self.text == self.kept:
                if self.generation is None:
                    return UNKNOWN
                return NOT_PATCHED
            return CHANGED
        if self.text is None:
            return UNKNOWN
        if self.ours:
            self.generation = recognise(strip_ours(self.text))
            return CHANGED
        self.generation = recognise(self.text, _md5(self.script))
        if self.generation is None:
            return UNKNOWN
        return NOT_PATCHED

    def generation_name(self):
        if self.generation is None:
            return "-"
        return self.generation.name


def hook_state(root="/"):
    """{"state", "generation", "script"} of the host's vif script; never raises."""
    script = find_script(root)
    try:
        examined = Examined(script, root)
    except StateError:
        return {"state": UNKNOWN, "generation": None, "script": script}
    name = None
    if examined.generation is not None:
        name = examined.generation.name
    return {"state": examined.state, "generation": name, "script": script}


# ---------------------------------------------------------------- commands

def apply(script, hook, root, out, err):
    examined = Examined(script, root)
    log = syslog_logger("vif-patch")
    if examined.state == UNKNOWN:
        if examined.text is None:
            _say(err, "vif-patch: refused: no vif script at %s; nothing changed" % script)
        else:
            _say(err, "vif-patch: refused: %s is no known vif script generation (%s); "
                      "nothing changed" % (script, why_unknown(examined.text)))
        return EXIT_UNKNOWN
    if examined.state == CHANGED:
        if examined.text is None or examined.ours:
            what = "was changed since it was patched"
            if examined.text is None:
                what = "is missing"
            _say(err, "vif-patch: refused: %s %s (pristine copy %s); nothing changed"
                 % (script, what, examined.kept_path))
            return EXIT_CHANGED
        # A hotfix replaced the patched script: the new one is the pristine now.
        generation = recognise(examined.text, _md5(script))
        if generation is None:
            _say(err, "vif-patch: refused: %s was replaced since it was patched and is no known "
                      "vif script generation (%s); nothing changed"
                 % (script, why_unknown(examined.text)))
            return EXIT_UNKNOWN
        examined.kept = examined.text
        _write(examined.kept_path, examined.kept, like=script)
        log("%s was replaced since it was patched: kept the new one as pristine" % script)
    else:
        generation = examined.generation
        if generation is None:
            _say(err, "vif-patch: refused: the kept copy %s is no known generation; nothing changed"
                 % examined.kept_path)
            return EXIT_UNKNOWN
        if examined.state == NOT_PATCHED and examined.kept is None:
            examined.kept = examined.text
            _write(examined.kept_path, examined.kept, like=script)
    target = patched_text(examined.kept, generation, hook)
    if examined.text != target:
        _write(script, target)
        log("patched %s %s (hook %s)" % (generation.name, script, hook))
    _say(out, "vif-patch: patched %s %s" % (generation.name, script))
    return 0


def revert(script, root, out, err):
    examined = Examined(script, root)
    log = syslog_logger("vif-patch")
    if examined.state == PATCHED:
        _write(script, examined.kept)
        _remove(examined.kept_path)
        log("reverted %s %s" % (examined.generation_name(), script))
        _say(out, "vif-patch: reverted %s %s" % (examined.generation_name(), script))
        return 0
    if examined.state in (NOT_PATCHED, UNKNOWN):
        if examined.kept is not None:
            _remove(examined.kept_path)
        _say(out, "vif-patch: not patched: %s" % script)
        return 0
    if examined.text is not None and not examined.ours:
        # Replaced by something without our lines: the kept copy can never apply again.
        _remove(examined.kept_path)
        _say(err, "vif-patch: %s was replaced since it was patched: left as it is, and it no "
                  "longer calls the hook; dropped the old pristine copy" % script)
    else:
        _say(err, "vif-patch: %s was changed since it was patched: left as it is; the pristine "
                  "copy stays at %s" % (script, examined.kept_path))
    return EXIT_CHANGED


def status(script, root, out):
    examined = Examined(script, root)
    _say(out, "%s %s %s" % (examined.state, examined.generation_name(), script))
    return STATUS_EXIT[examined.state]


def _say(stream, line):
    stream.write(line + "\n")
    stream.flush()


def parse_args(argv):
    """(command, script or None, hook, root); InvalidArgument on anything odd."""
    if not argv or argv[0] not in ("apply", "revert", "status"):
        raise InvalidArgument("command", " ".join(argv[:1]), "expected apply, revert or status")
    options = {"--script": None, "--hook": DEFAULT_HOOK, "--root": "/"}
    i = 1
    while i < len(argv):
        arg = argv[i]
        value = None
        if "=" in arg:
            arg, value = arg.split("=", 1)
        if arg not in options:
            raise InvalidArgument("argument", argv[i], "unknown option")
        if value is None:
            if i + 1 >= len(argv):
                raise InvalidArgument(arg, "", "needs a value")
            value = argv[i + 1]
            i += 1
        options[arg] = value
        i += 1
    return argv[0], options["--script"], check_hook(options["--hook"]), options["--root"]


def main(argv, out=sys.stdout, err=sys.stderr):
    try:
        command, script, hook, root = parse_args(argv)
    except InvalidArgument:
        _say(err, "vif-patch: " + current_exception().message())
        _say(err, USAGE)
        return EXIT_USAGE
    if script is None:
        script = find_script(root)
    try:
        if command == "apply":
            return apply(script, hook, root, out, err)
        if command == "revert":
            return revert(script, root, out, err)
        return status(script, root, out)
    except StateError:
        error = current_exception()
        _say(err, "vif-patch: error: " + error.message())
        return error.exit_status
