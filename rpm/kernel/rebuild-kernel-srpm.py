#!/usr/bin/env python3
"""Rebuild a vendor dom0 kernel source RPM with the vif-rules netfilter options.

    rebuild-kernel-srpm.py --srpm kernel-....src.rpm --out OUTDIR
    rebuild-kernel-srpm.py --check-fragment [--base STOCK.config]

Steps (called by ``./build.sh --kernel-srpm FILE``):

1. unpack the SRPM (rpm2cpio | cpio) into a private rpmbuild tree;
2. find the i686 (i386..i686) ``xen`` and ``kdump`` kernel configs among its
   sources (``kernel-2.6.32-i686-xen.config`` style names, or ``--config
   FILE:FLAVOUR``), and merge ``physdev-ebtables.config`` into each (raise-only,
   see the fragment's header);
3. check every merged config against the Kconfig dependency facts in
   ``KCONFIG`` below (an option we need must not end up unbuildable);
4. append our release suffix (``--suffix``, default ``.vifrules1``) to the
   spec's Release (to the macro it names, so that the kernel's uname -r, which
   specs derive from version-release, changes with it);
5. ``rpmbuild -bs`` and ``rpmbuild -bb --target i686`` (gzip payload and MD5
   file digests, for rpm 4.4 on the dom0);
6. check the binary RPMs as a pack's kernel packages must be (REFERENCE 7):
   release carries our suffix, arch i686, one ``/lib/modules/<kver><flavour>``
   tree per kernel package with ``<kver>`` = version-release, Group .../Kernel,
   and a kdump package beside each xen one (when the SRPM has kdump); the
   packaged ``/boot/config-*`` (when shipped) carries the merged options;
7. copy the RPMs to OUTDIR (SRPM under OUTDIR/SRPMS) and write
   OUTDIR/kernel-packages.json for the pack step (label, type, kernel=...).

A real 2.6.18/2.6.32 kernel needs the compiler of its era: run this tool inside
a CentOS 5 i386 build root (``--rpmbuild 'chroot /srv/c5 rpmbuild'`` or mock);
on a modern host it only proves the mechanics.
"""

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_FRAGMENT = os.path.join(HERE, "physdev-ebtables.config")
DEFAULT_SUFFIX = ".vifrules1"
DEFAULT_LABEL = "vif-rules"
FLAVOURS = ("xen", "kdump")

# Kconfig facts for the options we set, as conjunctions ("depends on" and
# "select" alike: after oldconfig a selected symbol is at least the selector's
# value, so treating it as a dependency is only stricter).  Union over
# 2.6.18 - 2.6.32; symbols a version lacks are skipped by check_config() only
# when listed in OPTIONAL_SYMBOLS.
#   type: "bool" or "tristate"
KCONFIG = {
    "NET": ("bool", []),
    "INET": ("bool", ["NET"]),
    "EXPERIMENTAL": ("bool", []),
    "IPV6": ("tristate", ["NET", "INET"]),
    "NETFILTER": ("bool", ["NET"]),
    "NETFILTER_ADVANCED": ("bool", ["NETFILTER"]),              # 2.6.25+
    "NETFILTER_XTABLES": ("tristate", ["NETFILTER"]),
    "BRIDGE": ("tristate", ["NET"]),
    # net/Kconfig: bool; depends on BRIDGE && NETFILTER && INET (&& NETFILTER_ADVANCED, 2.6.25+)
    "BRIDGE_NETFILTER": ("bool", ["BRIDGE", "NETFILTER", "INET", "NETFILTER_ADVANCED"]),
    # net/netfilter/Kconfig: depends on NETFILTER_XTABLES && BRIDGE && BRIDGE_NETFILTER
    "NETFILTER_XT_MATCH_PHYSDEV": ("tristate", ["NETFILTER_XTABLES", "BRIDGE",
                                                "BRIDGE_NETFILTER", "NETFILTER_ADVANCED"]),
    # net/bridge/netfilter/Kconfig: depends on BRIDGE && NETFILTER (select NETFILTER_XTABLES, 2.6.28+)
    "BRIDGE_NF_EBTABLES": ("tristate", ["BRIDGE", "NETFILTER", "NETFILTER_XTABLES"]),
    "BRIDGE_EBT_T_FILTER": ("tristate", ["BRIDGE_NF_EBTABLES"]),
    "BRIDGE_EBT_IP": ("tristate", ["BRIDGE_NF_EBTABLES"]),
    "BRIDGE_EBT_ARP": ("tristate", ["BRIDGE_NF_EBTABLES"]),
    "BRIDGE_EBT_IP6": ("tristate", ["BRIDGE_NF_EBTABLES", "IPV6"]),   # 2.6.26+
    "BRIDGE_EBT_LOG": ("tristate", ["BRIDGE_NF_EBTABLES"]),
    "BRIDGE_EBT_T_NAT": ("tristate", ["BRIDGE_NF_EBTABLES"]),
    "BRIDGE_EBT_MARK_T": ("tristate", ["BRIDGE_NF_EBTABLES"]),
    # net/netfilter/Kconfig (x_tables matches; NETFILTER_ADVANCED from 2.6.25)
    "NETFILTER_XT_MATCH_MAC": ("tristate", ["NETFILTER_XTABLES", "NETFILTER_ADVANCED"]),
    "NETFILTER_XT_MATCH_MARK": ("tristate", ["NETFILTER_XTABLES"]),
    "NETFILTER_XT_MATCH_U32": ("tristate", ["NETFILTER_XTABLES", "NETFILTER_ADVANCED"]),  # 2.6.23+
    # net/ipv4/netfilter/Kconfig: menu depends on INET && NETFILTER
    "IP_NF_IPTABLES": ("tristate", ["INET", "NETFILTER", "NETFILTER_XTABLES"]),
    "IP_NF_FILTER": ("tristate", ["IP_NF_IPTABLES"]),
    # select NETFILTER_XTABLES, depends on NETFILTER_ADVANCED (2.6.25+)
    "IP_NF_ARPTABLES": ("tristate", ["INET", "NETFILTER", "NETFILTER_XTABLES",
                                     "NETFILTER_ADVANCED"]),
    "IP_NF_ARPFILTER": ("tristate", ["IP_NF_ARPTABLES"]),
    # net/ipv6/netfilter/Kconfig: menu depends on INET && IPV6 && NETFILTER
    # (&& EXPERIMENTAL up to the 2.6.2x series); select NETFILTER_XTABLES
    "IP6_NF_IPTABLES": ("tristate", ["INET", "IPV6", "NETFILTER", "NETFILTER_XTABLES",
                                     "EXPERIMENTAL"]),
    "IP6_NF_FILTER": ("tristate", ["IP6_NF_IPTABLES"]),
}
# Symbols that not every kernel in range has: a dependency on them is satisfied
# when the config does not mention them at all (the kernel lacks the symbol).
OPTIONAL_SYMBOLS = set(["NETFILTER_ADVANCED", "EXPERIMENTAL"])
# REFERENCE section 8, plus what the rules use (the nat table, the mark they
# dispatch on, the MAC match): what the pack's kernel must have (y or m).
# (The u32 match is enabled where the kernel has it, 2.6.23+; not required.)
REQUIRED = [
    "BRIDGE_NETFILTER", "NETFILTER_XT_MATCH_PHYSDEV", "BRIDGE_NF_EBTABLES",
    "BRIDGE_EBT_T_FILTER", "BRIDGE_EBT_IP", "BRIDGE_EBT_ARP", "BRIDGE_EBT_IP6",
    "IP_NF_ARPTABLES", "IP_NF_ARPFILTER", "IP6_NF_IPTABLES", "IP6_NF_FILTER",
    "BRIDGE_EBT_T_NAT", "BRIDGE_EBT_MARK_T", "NETFILTER_XT_MATCH_MAC",
    "NETFILTER_XT_MATCH_MARK",
]

LEVEL = {"n": 0, "m": 1, "y": 2}
SET_RE = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
UNSET_RE = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set\s*$")


class ToolError(Exception):
    pass


def log(msg):
    sys.stderr.write("rebuild-kernel-srpm: %s\n" % msg)


# --------------------------------------------------------------------- configs

def parse_config_lines(lines, where="config"):
    """Return (values, problems): values maps SYMBOL -> 'y'|'m'|'n'|raw string;
    problems lists symbols assigned twice with different values."""
    values = {}
    problems = []
    for no, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        m = SET_RE.match(line)
        if m:
            sym, val = m.group(1), m.group(2)
        else:
            m = UNSET_RE.match(line)
            if not m:
                continue
            sym, val = m.group(1), "n"
        if sym in values and values[sym] != val:
            problems.append("%s:%d: CONFIG_%s=%s conflicts with earlier %s"
                            % (where, no, sym, val, values[sym]))
        values[sym] = val
    return values, problems


def parse_config(path):
    with open(path) as f:
        return parse_config_lines(f.readlines(), path)


def merge_config_text(text, fragment_values):
    """Merge the fragment into a kernel .config text (raise-only; 'is not set'
    only as a default for absent symbols).  Returns (new_text, changes)."""
    lines = text.splitlines(True)
    present = {}
    for i, line in enumerate(lines):
        m = SET_RE.match(line.rstrip("\n")) or UNSET_RE.match(line.rstrip("\n"))
        if m:
            present.setdefault(m.group(1), []).append(i)
    changes = []
    appended = []
    for sym in fragment_values:
        want = fragment_values[sym]
        idxs = present.get(sym)
        if idxs:
            cur_vals = set()
            for i in idxs:
                m = SET_RE.match(lines[i].rstrip("\n"))
                cur_vals.add(m.group(2) if m else "n")
            cur = max(cur_vals, key=lambda v: LEVEL.get(v, 2))
            if want == "n" or LEVEL.get(cur, 2) >= LEVEL.get(want, 2):
                new = cur
            else:
                new = want
            newline = ("CONFIG_%s=%s\n" % (sym, new)) if new != "n" else \
                ("# CONFIG_%s is not set\n" % sym)
            if len(idxs) > 1 or lines[idxs[0]] != newline:
                changes.append((sym, "/".join(sorted(cur_vals)), new))
            lines[idxs[0]] = newline
            for i in idxs[1:]:   # duplicates in the vendor file: keep one
                lines[i] = ""
        else:
            if want == "n":
                appended.append("# CONFIG_%s is not set\n" % sym)
            else:
                appended.append("CONFIG_%s=%s\n" % (sym, want))
            changes.append((sym, None, want))
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    if appended:
        lines.append("\n# --- added by vif-rules (rpm/kernel/physdev-ebtables.config) ---\n")
        lines.extend(appended)
    return "".join(lines), changes


def fragment_values(path):
    values, problems = parse_config(path)
    if problems:
        raise ToolError("fragment %s is inconsistent:\n  %s" % (path, "\n  ".join(problems)))
    # keep file order
    order = []
    with open(path) as f:
        for line in f:
            m = SET_RE.match(line.rstrip("\n")) or UNSET_RE.match(line.rstrip("\n"))
            if m and m.group(1) not in order:
                order.append(m.group(1))
    return dict((s, values[s]) for s in order), order


def check_config(values, required=REQUIRED):
    """Check a (merged) config: every required option enabled, and every enabled
    option of KCONFIG with its dependencies at a level that allows it.
    Returns a list of problems (empty when fine)."""
    problems = []
    for sym in required:
        v = values.get(sym, "n")
        if v not in ("y", "m"):
            problems.append("CONFIG_%s is %s, must be y or m" % (sym, v))
    for sym, (typ, deps) in sorted(KCONFIG.items()):
        v = values.get(sym, "n")
        if v not in ("y", "m"):
            continue
        if typ == "bool" and v == "m":
            problems.append("CONFIG_%s is a bool, cannot be m" % sym)
        for dep in deps:
            if dep not in values and dep in OPTIONAL_SYMBOLS:
                continue
            dv = values.get(dep, "n")
            if dv not in ("y", "m"):
                problems.append("CONFIG_%s=%s needs CONFIG_%s (is %s)" % (sym, v, dep, dv))
            elif typ == "tristate" and KCONFIG.get(dep, ("tristate",))[0] == "tristate" \
                    and LEVEL[dv] < LEVEL[v]:
                problems.append("CONFIG_%s=%s needs CONFIG_%s=y (is m)" % (sym, v, dep))
    return problems


# --------------------------------------------------------------------- spec

def find_config_files(sourcedir, explicit=None):
    """Return [(path, flavour)] of the i686 xen/kdump configs to patch."""
    found = []
    if explicit:
        for item in explicit:
            name, _, flavour = item.rpartition(":")
            if not name or flavour not in FLAVOURS:
                raise ToolError("--config wants FILE:FLAVOUR with FLAVOUR in %s, got %r"
                                % ("/".join(FLAVOURS), item))
            path = os.path.join(sourcedir, name)
            if not os.path.isfile(path):
                raise ToolError("--config %s: no such file in the SRPM" % name)
            found.append((path, flavour))
        return found
    pat = re.compile(r"(?:^|[-_.])i[3-6]86[-_.](?:.*[-_.])?(%s)(?:[-_.]config|\.config)?$"
                     % "|".join(FLAVOURS))
    for path in sorted(glob.glob(os.path.join(sourcedir, "*"))):
        name = os.path.basename(path)
        if not os.path.isfile(path) or "config" not in name:
            continue
        m = pat.search(re.sub(r"\.config$", "", name)) or pat.search(name)
        if m:
            found.append((path, m.group(1)))
    return found


def add_release_suffix(spec_text, suffix):
    """Append suffix to the spec's Release: (to the macro it is made of, if it is a
    single %define/%global macro).  Returns (new_text, description)."""
    rel = re.search(r"^(Release:[ \t]*)(\S.*?)[ \t]*$", spec_text, re.M)
    if not rel:
        raise ToolError("spec has no Release: tag")
    value = rel.group(2)
    macro = re.match(r"^%\{?\??([A-Za-z_][A-Za-z0-9_]*)\}?$", value)
    if macro:
        name = macro.group(1)
        d = re.search(r"^([ \t]*%%(?:define|global)[ \t]+%s[ \t]+)(\S.*?)[ \t]*$"
                      % re.escape(name), spec_text, re.M)
        if d:
            if d.group(2).endswith(suffix):
                return spec_text, "macro %%{%s} already ends in %s" % (name, suffix)
            new = spec_text[:d.start()] + d.group(1) + d.group(2) + suffix + spec_text[d.end():]
            return new, "macro %%{%s}: %s -> %s%s" % (name, d.group(2), d.group(2), suffix)
    if value.endswith(suffix):
        return spec_text, "Release already ends in %s" % suffix
    new = spec_text[:rel.start()] + rel.group(1) + value + suffix + spec_text[rel.end():]
    return new, "Release: %s -> %s%s" % (value, value, suffix)


# --------------------------------------------------------------------- rpm helpers

def run(cmd, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("universal_newlines", True)
    p = subprocess.run(cmd, **kw)
    if p.returncode != 0:
        raise ToolError("%s failed (%d):\n%s%s" % (" ".join(cmd), p.returncode,
                                                   p.stdout[-3000:], p.stderr[-3000:]))
    return p.stdout


def rpm_query(path, fmt):
    return run(["rpm", "-qp", "--nosignature", "--nodigest", "--qf", fmt, path])


def rpm_files(path):
    out = rpm_query(path, "[%{FILENAMES}\n]")
    return [l for l in out.splitlines() if l and l != "(none)"]


def unpack_srpm(srpm, topdir):
    sourcedir = os.path.join(topdir, "SOURCES")
    specdir = os.path.join(topdir, "SPECS")
    for d in ("SOURCES", "SPECS", "BUILD", "RPMS", "SRPMS", "BUILDROOT", "tmp"):
        os.makedirs(os.path.join(topdir, d), exist_ok=True)
    p1 = subprocess.Popen(["rpm2cpio", os.path.abspath(srpm)], stdout=subprocess.PIPE)
    p2 = subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
                        stdin=p1.stdout, cwd=sourcedir, stderr=subprocess.PIPE,
                        universal_newlines=True)
    p1.stdout.close()
    if p1.wait() != 0 or p2.returncode != 0:
        raise ToolError("cannot unpack %s: %s" % (srpm, p2.stderr))
    specs = glob.glob(os.path.join(sourcedir, "*.spec"))
    if len(specs) != 1:
        raise ToolError("expected one .spec in %s, found %s" % (srpm, specs))
    spec = os.path.join(specdir, os.path.basename(specs[0]))
    shutil.move(specs[0], spec)
    return sourcedir, spec


# --------------------------------------------------------------------- checks

MODDIR_RE = re.compile(r"^/lib/modules/([^/]+)(?:/|$)")


def describe_kernel_rpm(path, suffix, label, fragment):
    """Check one binary RPM; return its manifest entry."""
    q = rpm_query(path, "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{GROUP}|%{PAYLOADCOMPRESSOR}")
    name, version, release, arch, group, comp = q.split("|")
    entry = dict(file=os.path.basename(path), name=name, version=version, release=release,
                 arch=arch, group=group, label=name, type="rpm", flavour=None, kernel=None)
    problems = []
    if not release.endswith(suffix) and suffix not in release:
        problems.append("release %s lacks our suffix %s" % (release, suffix))
    if arch not in ("i686", "i386", "noarch"):
        problems.append("arch %s is not i686" % arch)
    if comp not in ("gzip", "(none)"):
        problems.append("payload %s is unreadable for rpm 4.4" % comp)
    files = rpm_files(path)
    kvers = set()
    for f in files:
        m = MODDIR_RE.match(f)
        if m:
            kvers.add(m.group(1))
    kver = "%s-%s" % (version, release)
    if kvers:
        if len(kvers) != 1:
            problems.append("modules for several kernels: %s" % sorted(kvers))
        else:
            uname = kvers.pop()
            if not uname.startswith(kver):
                problems.append("/lib/modules/%s does not start with %s" % (uname, kver))
            flavour = uname[len(kver):]
            if flavour not in FLAVOURS:
                problems.append("/lib/modules/%s: flavour %r is not one of %s"
                                % (uname, flavour, "/".join(FLAVOURS)))
            elif flavour not in name:
                problems.append("package %s carries /lib/modules/%s but its name lacks %r"
                                % (name, uname, flavour))
            if not group.endswith("Kernel"):
                problems.append("Group %r of a kernel package must end in /Kernel" % group)
            entry.update(flavour=flavour, kernel=uname, label="%s-kernel-%s" % (label, flavour))
            cfgs = [f for f in files if f == "/boot/config-%s" % uname]
            if cfgs:
                text = extract_file(path, cfgs[0])
                values, dup = parse_config_lines(text.splitlines(), cfgs[0])
                problems.extend(dup)
                problems.extend("%s: %s" % (cfgs[0], p) for p in check_config(values))
                for sym, want in fragment.items():
                    if want in ("y", "m") and LEVEL.get(values.get(sym, "n"), 2) < LEVEL[want]:
                        problems.append("%s: CONFIG_%s=%s, fragment wants %s"
                                        % (cfgs[0], sym, values.get(sym, "n"), want))
                entry["config_checked"] = cfgs[0]
    return entry, problems


def extract_file(rpmpath, member):
    tmp = tempfile.mkdtemp(prefix="vr-extract-")
    try:
        p1 = subprocess.Popen(["rpm2cpio", rpmpath], stdout=subprocess.PIPE)
        subprocess.run(["cpio", "-idm", "--quiet", "." + member], stdin=p1.stdout, cwd=tmp,
                       stderr=subprocess.PIPE)
        p1.stdout.close()
        p1.wait()
        with open(os.path.join(tmp, member.lstrip("/"))) as f:
            return f.read()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------- main

RPM_COMPAT_DEFINES = [
    "_binary_payload w9.gzdio", "_source_payload w9.gzdio",
    "_binary_filedigest_algorithm 1", "_source_filedigest_algorithm 1",
    "_build_id_links none",
]


def rebuild(args):
    fragment, order = fragment_values(args.fragment)
    work = tempfile.mkdtemp(prefix="vr-kernel-")
    try:
        topdir = os.path.join(work, "top")
        sourcedir, spec = unpack_srpm(args.srpm, topdir)
        configs = find_config_files(sourcedir, args.config)
        if not [c for c in configs if c[1] == "xen"]:
            raise ToolError("no i686 xen config found among the SRPM's sources: %s "
                            "(use --config FILE:xen)" % sorted(os.listdir(sourcedir)))
        report = dict(srpm=os.path.basename(args.srpm), suffix=args.suffix, configs=[])
        for path, flavour in configs:
            with open(path) as f:
                text = f.read()
            new, changes = merge_config_text(text, fragment)
            values, dup = parse_config_lines(new.splitlines(), os.path.basename(path))
            problems = dup + check_config(values)
            if problems:
                raise ToolError("merged %s is not buildable:\n  %s"
                                % (os.path.basename(path), "\n  ".join(problems)))
            with open(path, "w") as f:
                f.write(new)
            log("merged %d option(s) into %s (%s)" % (len(changes), os.path.basename(path), flavour))
            report["configs"].append(dict(file=os.path.basename(path), flavour=flavour,
                                          changes=[list(c) for c in changes]))
        with open(spec) as f:
            spec_text = f.read()
        spec_text, how = add_release_suffix(spec_text, args.suffix)
        with open(spec, "w") as f:
            f.write(spec_text)
        log("release: " + how)
        report["release_change"] = how

        rpmbuild = shlex.split(args.rpmbuild)
        common = ["--define", "_topdir " + topdir, "--define", "_tmppath " + os.path.join(topdir, "tmp")]
        for d in RPM_COMPAT_DEFINES:
            common += ["--define", d]
        if args.nodeps:
            common.append("--nodeps")
        log("rpmbuild -bs")
        run(rpmbuild + ["-bs"] + common + [spec])
        log("rpmbuild -bb --target %s (this takes long for a real kernel)" % args.target)
        p = subprocess.run(rpmbuild + ["-bb", "--target", args.target] + common + [spec],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True)
        with open(os.path.join(work, "rpmbuild.log"), "w") as f:
            f.write(p.stdout)
        if p.returncode != 0:
            raise ToolError("rpmbuild -bb failed (%d):\n%s" % (p.returncode, p.stdout[-4000:]))

        rpms = sorted(glob.glob(os.path.join(topdir, "RPMS", "*", "*.rpm")))
        if not rpms:
            raise ToolError("rpmbuild produced no binary RPMs")
        entries = []
        problems = []
        for r in rpms:
            e, pr = describe_kernel_rpm(r, args.suffix, args.label, fragment)
            entries.append(e)
            problems.extend("%s: %s" % (os.path.basename(r), x) for x in pr)
        kernels = [e for e in entries if e["flavour"]]
        if not [e for e in kernels if e["flavour"] == "xen"]:
            problems.append("no xen kernel package was built")
        has_kdump_cfg = [c for c in configs if c[1] == "kdump"]
        for e in kernels:
            if e["flavour"] == "xen" and has_kdump_cfg:
                kd = "%s-%skdump" % (e["version"], e["release"])
                if not [k for k in kernels if k["kernel"] == kd]:
                    problems.append("%s has no matching kdump package (%s)" % (e["file"], kd))
        if problems:
            raise ToolError("built packages are not fit for the pack:\n  " + "\n  ".join(problems))

        os.makedirs(os.path.join(args.out, "SRPMS"), exist_ok=True)
        for r in rpms:
            shutil.copy2(r, args.out)
        for s in glob.glob(os.path.join(topdir, "SRPMS", "*.src.rpm")):
            shutil.copy2(s, os.path.join(args.out, "SRPMS"))
            report["srpm_rebuilt"] = os.path.join("SRPMS", os.path.basename(s))
        report["packages"] = entries
        with open(os.path.join(args.out, "kernel-packages.json"), "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
            f.write("\n")
        for e in entries:
            log("wrote %s%s" % (e["file"], (" (kernel=%s)" % e["kernel"]) if e["kernel"] else ""))
        return 0
    finally:
        if args.keep_work:
            log("work tree kept in " + work)
        else:
            shutil.rmtree(work, ignore_errors=True)


def check_fragment(args):
    fragment, order = fragment_values(args.fragment)
    problems = []
    if args.base:
        with open(args.base) as f:
            merged, _ = merge_config_text(f.read(), fragment)
        values, dup = parse_config_lines(merged.splitlines(), "merged")
        problems += dup
    else:
        values = dict(fragment)
    problems += check_config(values)
    for p in problems:
        sys.stdout.write(p + "\n")
    if not problems:
        sys.stdout.write("fragment OK (%d symbols)\n" % len(fragment))
    return 1 if problems else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--srpm", help="vendor dom0 kernel source RPM")
    ap.add_argument("--out", help="output directory for the binary RPMs")
    ap.add_argument("--fragment", default=DEFAULT_FRAGMENT)
    ap.add_argument("--suffix", default=DEFAULT_SUFFIX, help="release suffix (default %(default)s)")
    ap.add_argument("--label", default=DEFAULT_LABEL, help="pack label prefix for the manifest")
    ap.add_argument("--target", default="i686")
    ap.add_argument("--config", action="append", metavar="FILE:FLAVOUR",
                    help="config file in the SRPM to patch (repeatable; default: autodetect)")
    ap.add_argument("--rpmbuild", default="rpmbuild",
                    help="rpmbuild command (e.g. a chroot/mock wrapper)")
    ap.add_argument("--nodeps", action="store_true", default=True,
                    help="pass --nodeps to rpmbuild (default; BuildRequires are CentOS names)")
    ap.add_argument("--keep-work", action="store_true")
    ap.add_argument("--check-fragment", action="store_true",
                    help="only check the fragment (merged into --base if given)")
    ap.add_argument("--base", help="stock config to merge into for --check-fragment")
    args = ap.parse_args(argv)
    try:
        if args.check_fragment:
            return check_fragment(args)
        if not args.srpm or not args.out:
            ap.error("--srpm and --out are required")
        if not os.path.isfile(args.srpm):
            raise ToolError("no such SRPM: %s" % args.srpm)
        os.makedirs(args.out, exist_ok=True)
        args.out = os.path.abspath(args.out)
        return rebuild(args)
    except ToolError as e:
        log(str(e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
