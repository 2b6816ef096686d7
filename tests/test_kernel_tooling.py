"""Kernel tooling: the config fragment and rpm/kernel/rebuild-kernel-srpm.py.

The vendor SRPM is not available here, so the rebuild is proven on a small
kernel SRPM built by the test: a real spec with xen and kdump sub-packages and
i686/x86_64 config files, whose %build only checks the configs and whose
%install lays out /boot and /lib/modules/<kver><flavour> as a kernel would.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import textwrap

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KDIR = os.path.join(TOP, "rpm", "kernel")
TOOL = os.path.join(KDIR, "rebuild-kernel-srpm.py")
FRAGMENT = os.path.join(KDIR, "physdev-ebtables.config")

# REFERENCE section 8, written down here independently of the tool.
REFERENCE_OPTIONS = [
    "BRIDGE_NETFILTER", "NETFILTER_XT_MATCH_PHYSDEV", "BRIDGE_NF_EBTABLES",
    "BRIDGE_EBT_T_FILTER", "BRIDGE_EBT_IP", "BRIDGE_EBT_ARP", "BRIDGE_EBT_IP6",
    "IP_NF_ARPTABLES", "IP_NF_ARPFILTER", "IP6_NF_IPTABLES", "IP6_NF_FILTER",
]

# Kconfig facts (2.6.18 - 2.6.32), written down here independently of the tool's
# map: option -> symbols it needs (depends on / select).
#  net/Kconfig:                BRIDGE_NETFILTER bool, depends on BRIDGE && NETFILTER && INET
#  net/netfilter/Kconfig:      NETFILTER_XT_MATCH_PHYSDEV depends on NETFILTER_XTABLES &&
#                              BRIDGE_NETFILTER (&& BRIDGE)
#  net/bridge/netfilter/Kconfig: BRIDGE_NF_EBTABLES depends on BRIDGE && NETFILTER
#                              (select NETFILTER_XTABLES since 2.6.28);
#                              BRIDGE_EBT_* depend on BRIDGE_NF_EBTABLES; EBT_IP6 also on IPV6
#  net/ipv4/netfilter/Kconfig: menu depends on INET && NETFILTER; IP_NF_ARPTABLES selects
#                              NETFILTER_XTABLES; IP_NF_ARPFILTER depends on IP_NF_ARPTABLES
#  net/ipv6/netfilter/Kconfig: menu depends on INET && IPV6 && NETFILTER; IP6_NF_IPTABLES
#                              selects NETFILTER_XTABLES; IP6_NF_FILTER depends on it
FACTS = {
    "BRIDGE_NETFILTER": {"BRIDGE", "NETFILTER", "INET"},
    "NETFILTER_XT_MATCH_PHYSDEV": {"NETFILTER_XTABLES", "BRIDGE_NETFILTER", "BRIDGE"},
    "BRIDGE_NF_EBTABLES": {"BRIDGE", "NETFILTER", "NETFILTER_XTABLES"},
    "BRIDGE_EBT_T_FILTER": {"BRIDGE_NF_EBTABLES"},
    "BRIDGE_EBT_IP": {"BRIDGE_NF_EBTABLES"},
    "BRIDGE_EBT_ARP": {"BRIDGE_NF_EBTABLES"},
    "BRIDGE_EBT_IP6": {"BRIDGE_NF_EBTABLES", "IPV6"},
    "IP_NF_IPTABLES": {"INET", "NETFILTER", "NETFILTER_XTABLES"},
    "IP_NF_ARPTABLES": {"INET", "NETFILTER", "NETFILTER_XTABLES"},
    "IP_NF_ARPFILTER": {"IP_NF_ARPTABLES"},
    "IP6_NF_IPTABLES": {"INET", "IPV6", "NETFILTER", "NETFILTER_XTABLES"},
    "IP6_NF_FILTER": {"IP6_NF_IPTABLES"},
    "BRIDGE_EBT_T_NAT": {"BRIDGE_NF_EBTABLES"},
    "BRIDGE_EBT_MARK_T": {"BRIDGE_NF_EBTABLES"},
    "NETFILTER_XT_MATCH_MAC": {"NETFILTER_XTABLES"},
    "NETFILTER_XT_MATCH_MARK": {"NETFILTER_XTABLES"},
    "NETFILTER_XT_MATCH_U32": {"NETFILTER_XTABLES"},
}
BOOLS = {"BRIDGE_NETFILTER", "NETFILTER", "INET", "NET", "NETFILTER_ADVANCED", "EXPERIMENTAL"}

# A stock XenServer 5.6 FP1-like dom0 config: netfilter and the bridge, but no
# br_netfilter, physdev, ebtables, arptables or ip6tables.
STOCK_I686_XEN = textwrap.dedent("""\
    #
    # Automatically generated make config: don't edit
    # Linux kernel version: 2.6.32.12-0.7.1.xs5.6.100.323.170596xen
    #
    CONFIG_X86_32=y
    CONFIG_X86_XEN=y
    CONFIG_XEN=y
    CONFIG_EXPERIMENTAL=y
    CONFIG_MODULES=y
    CONFIG_NET=y
    CONFIG_PACKET=y
    CONFIG_UNIX=y
    CONFIG_INET=y
    CONFIG_IP_MULTICAST=y
    # CONFIG_IPV6 is not set
    CONFIG_NETFILTER=y
    # CONFIG_NETFILTER_DEBUG is not set
    CONFIG_NETFILTER_ADVANCED=y
    CONFIG_NETFILTER_XTABLES=y
    CONFIG_NETFILTER_XT_MATCH_STATE=m
    # CONFIG_NETFILTER_XT_MATCH_PHYSDEV is not set
    CONFIG_IP_NF_IPTABLES=m
    CONFIG_IP_NF_FILTER=m
    # CONFIG_IP_NF_ARPTABLES is not set
    CONFIG_BRIDGE=m
    # CONFIG_BRIDGE_NETFILTER is not set
    # CONFIG_BRIDGE_NF_EBTABLES is not set
    CONFIG_VLAN_8021Q=m
    """)
STOCK_I686_KDUMP = STOCK_I686_XEN.replace("CONFIG_X86_XEN=y\nCONFIG_XEN=y\n",
                                          "# CONFIG_XEN is not set\nCONFIG_CRASH_DUMP=y\n")
STOCK_X86_64_XEN = STOCK_I686_XEN.replace("CONFIG_X86_32=y", "CONFIG_X86_64=y")

VERSION = "2.6.32.12"
RELEASE = "0.7.1.xs5.6.100.323.170596"
SUFFIX = ".vifrules1"
KVER = "%s-%s%s" % (VERSION, RELEASE, SUFFIX)

FAKE_KERNEL_SPEC = textwrap.dedent("""\
    # A fake dom0 kernel spec, shaped like the vendor's: uname -r = version-release+flavour.
    %%define _binary_payload w9.gzdio
    %%define debug_package %%{nil}
    %%define _build_id_links none
    %%define kversion 2.6.32
    %%define release %(release)s
    %%define KVERREL %%{version}-%%{release}
    Name: kernel
    Summary: fake XenServer dom0 kernel
    Version: %(version)s
    Release: %%{release}
    License: GPLv2
    Group: System Environment/Kernel
    ExclusiveArch: i686 x86_64
    Source10: kernel-%%{kversion}-i686-xen.config
    Source11: kernel-%%{kversion}-i686-kdump.config
    Source12: kernel-%%{kversion}-x86_64-xen.config
    %%description
    fake kernel

    %%package xen
    Summary: the dom0 kernel
    Group: System Environment/Kernel
    %%description xen
    fake xen kernel

    %(kdump_package)s

    %%prep
    %%setup -q -c -T

    %%build
    # a stand-in for "make nonint_oldconfig": refuse a symbol set twice
    for f in %(flavours)s; do
        cp %%{_sourcedir}/kernel-%%{kversion}-%%{_target_cpu}-$f.config .config-$f
        dups=$(sed -n -e 's/^\\(CONFIG_[A-Za-z0-9_]*\\)=.*/\\1/p' \\
                      -e 's/^# \\(CONFIG_[A-Za-z0-9_]*\\) is not set/\\1/p' .config-$f | sort | uniq -d)
        if [ -n "$dups" ]; then echo "duplicate symbols: $dups"; exit 1; fi
        grep -q '^CONFIG_BRIDGE=' .config-$f
    done
    grep -q '^CONFIG_XEN=y' .config-xen

    %%install
    rm -rf %%{buildroot}
    for f in %(flavours)s; do
        mkdir -p %%{buildroot}/boot %%{buildroot}/lib/modules/%%{KVERREL}$f/kernel/net/bridge
        install -m 644 .config-$f %%{buildroot}/boot/config-%%{KVERREL}$f
        echo "fake vmlinuz $f" > %%{buildroot}/boot/vmlinuz-%%{KVERREL}$f
        echo "fake module" > %%{buildroot}/lib/modules/%%{KVERREL}$f/kernel/net/bridge/bridge.ko
    done

    %%files xen
    %%defattr(-,root,root)
    /boot/config-%%{KVERREL}xen
    /boot/vmlinuz-%%{KVERREL}xen
    /lib/modules/%%{KVERREL}xen

    %(kdump_files)s
    """)

KDUMP_PACKAGE = textwrap.dedent("""\
    %package kdump
    Summary: the crash kernel
    Group: System Environment/Kernel
    %description kdump
    fake kdump kernel
    """)
KDUMP_FILES = textwrap.dedent("""\
    %files kdump
    %defattr(-,root,root)
    /boot/config-%{KVERREL}kdump
    /boot/vmlinuz-%{KVERREL}kdump
    /lib/modules/%{KVERREL}kdump
    """)


def load_tool():
    spec = importlib.util.spec_from_file_location("rebuild_kernel_srpm", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tool():
    return load_tool()


def read_assignments(path_or_text, is_text=False):
    """[(symbol, value)] for every assignment line, 'n' for 'is not set'."""
    text = path_or_text if is_text else open(path_or_text).read()
    out = []
    for line in text.splitlines():
        m = re.match(r"^CONFIG_(\w+)=(\S+)$", line)
        if m:
            out.append((m.group(1), m.group(2)))
            continue
        m = re.match(r"^# CONFIG_(\w+) is not set$", line)
        if m:
            out.append((m.group(1), "n"))
    return out


def need(*tools):
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip("%s not installed" % t)


def run(cmd, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("universal_newlines", True)
    kw.setdefault("timeout", 300)
    return subprocess.run(cmd, **kw)


# --------------------------------------------------------------------------- fragment

def test_fragment_sets_every_reference_option():
    vals = dict(read_assignments(FRAGMENT))
    for sym in REFERENCE_OPTIONS:
        assert vals.get(sym) in ("y", "m"), "CONFIG_%s missing or off in the fragment" % sym
    # bools cannot be modules
    for sym in BOOLS:
        assert vals.get(sym, "y") != "m", sym


def test_fragment_has_no_duplicates_or_conflicts():
    seen = {}
    for sym, val in read_assignments(FRAGMENT):
        assert sym not in seen, "CONFIG_%s appears twice (%s, %s)" % (sym, seen[sym], val)
        seen[sym] = val
    # and no garbage lines that look like options but are not parsed
    with open(FRAGMENT) as f:
        for line in f:
            line = line.strip()
            if "CONFIG_" in line and not line.startswith("#"):
                assert re.match(r"^CONFIG_\w+=[ym]$", line), line


def test_fragment_dependencies_present_in_fragment_or_stock():
    """Every dependency (FACTS, independent of the tool) of every option the
    fragment enables is enabled in the fragment or in the stock config."""
    frag = dict(read_assignments(FRAGMENT))
    stock = dict(read_assignments(STOCK_I686_XEN, is_text=True))
    for sym, deps in FACTS.items():
        if frag.get(sym) not in ("y", "m"):
            continue
        for dep in deps:
            # the merge only raises: the effective value is the higher of the two
            have = max(frag.get(dep, "n"), stock.get(dep, "n"), key="nmy".index)
            assert have in ("y", "m"), "CONFIG_%s needs CONFIG_%s" % (sym, dep)
            # a module cannot satisfy a built-in tristate option
            if frag[sym] == "y" and sym not in BOOLS and dep not in BOOLS:
                assert have == "y", "CONFIG_%s=y needs CONFIG_%s=y" % (sym, dep)


def test_tool_map_agrees_with_facts_and_covers_fragment(tool):
    for sym, deps in FACTS.items():
        assert sym in tool.KCONFIG, sym
        assert deps <= set(tool.KCONFIG[sym][1]), "tool's map misses deps of %s" % sym
    assert tool.KCONFIG["BRIDGE_NETFILTER"][0] == "bool"
    frag = dict(read_assignments(FRAGMENT))
    unchecked = [s for s, v in frag.items() if v in ("y", "m") and s not in tool.KCONFIG]
    assert not unchecked, "fragment enables options the dependency check does not know: %s" % unchecked
    assert set(REFERENCE_OPTIONS) <= set(tool.REQUIRED)


def test_merged_stock_config_passes_check(tool):
    frag, _ = tool.fragment_values(FRAGMENT)
    merged, changes = tool.merge_config_text(STOCK_I686_XEN, frag)
    values, dup = tool.parse_config_lines(merged.splitlines())
    assert dup == []
    assert tool.check_config(values) == []
    for sym in REFERENCE_OPTIONS:
        assert values[sym] in ("y", "m")
    # raise-only: the vendor's built-in xtables stays built in, IPv6 goes from off to m
    assert values["NETFILTER_XTABLES"] == "y"
    assert values["IPV6"] == "m"
    assert values["XEN"] == "y" and values["VLAN_8021Q"] == "m"
    # every symbol exactly once in the merged text
    syms = [s for s, _ in read_assignments(merged, is_text=True)]
    assert len(syms) == len(set(syms))
    changed = dict((c[0], c[2]) for c in changes)
    assert changed["BRIDGE_NETFILTER"] == "y" and "NETFILTER_XTABLES" not in changed


def test_merge_never_switches_vendor_options_off(tool):
    stock = STOCK_I686_XEN + "CONFIG_BRIDGE_EBT_VLAN=m\nCONFIG_IP6_NF_TARGET_LOG=y\n"
    frag, _ = tool.fragment_values(FRAGMENT)
    assert frag["BRIDGE_EBT_VLAN"] == "n" and frag["IP6_NF_TARGET_LOG"] == "n"
    merged, _ = tool.merge_config_text(stock, frag)
    values, _ = tool.parse_config_lines(merged.splitlines())
    assert values["BRIDGE_EBT_VLAN"] == "m" and values["IP6_NF_TARGET_LOG"] == "y"


def test_check_fails_on_missing_or_weaker_dependencies(tool, tmp_path):
    # A fragment without NETFILTER_XTABLES against a stock config without it.
    frag_lines = [l for l in open(FRAGMENT) if not l.startswith("CONFIG_NETFILTER_XTABLES=")]
    bad_frag = tmp_path / "frag.config"
    bad_frag.write_text("".join(frag_lines))
    stock = STOCK_I686_XEN.replace("CONFIG_NETFILTER_XTABLES=y",
                                   "# CONFIG_NETFILTER_XTABLES is not set")
    base = tmp_path / "stock.config"
    base.write_text(stock)
    p = run(["python3", TOOL, "--check-fragment", "--fragment", str(bad_frag), "--base", str(base)])
    assert p.returncode == 1
    assert "needs CONFIG_NETFILTER_XTABLES" in p.stdout
    # The real fragment against the same stock: fine.
    p = run(["python3", TOOL, "--check-fragment", "--base", str(base)])
    assert p.returncode == 0, p.stdout + p.stderr
    # Built-in option over a modular dependency, and a bool as module.
    problems = tool.check_config({"NET": "y", "INET": "y", "NETFILTER": "y",
                                  "NETFILTER_XTABLES": "m", "IP_NF_ARPTABLES": "y",
                                  "BRIDGE": "m", "BRIDGE_NETFILTER": "m"}, required=[])
    assert any("IP_NF_ARPTABLES=y needs CONFIG_NETFILTER_XTABLES=y" in p for p in problems), problems
    assert any("BRIDGE_NETFILTER is a bool" in p for p in problems), problems


def test_conflicting_fragment_is_refused(tmp_path):
    bad = tmp_path / "frag.config"
    bad.write_text(open(FRAGMENT).read() + "\n# CONFIG_BRIDGE_NETFILTER is not set\n")
    p = run(["python3", TOOL, "--check-fragment", "--fragment", str(bad)])
    assert p.returncode == 1
    assert "BRIDGE_NETFILTER" in p.stderr + p.stdout


# --------------------------------------------------------------------------- fake SRPM

def build_fake_srpm(tmp_path, with_kdump_package=True, configs=None):
    need("rpmbuild", "rpm2cpio", "cpio")
    top = tmp_path / "srpm-top"
    src = top / "SOURCES"
    src.mkdir(parents=True)
    configs = configs if configs is not None else {
        "kernel-2.6.32-i686-xen.config": STOCK_I686_XEN,
        "kernel-2.6.32-i686-kdump.config": STOCK_I686_KDUMP,
        "kernel-2.6.32-x86_64-xen.config": STOCK_X86_64_XEN,
    }
    for name, text in configs.items():
        (src / name).write_text(text)
    spec = top / "kernel.spec"
    spec.write_text(FAKE_KERNEL_SPEC % dict(
        version=VERSION, release=RELEASE,
        flavours="xen kdump" if with_kdump_package else "xen",
        kdump_package=KDUMP_PACKAGE if with_kdump_package else "",
        kdump_files=KDUMP_FILES if with_kdump_package else ""))
    p = run(["rpmbuild", "-bs", "--nodeps", "--define", "_topdir %s" % top,
             "--define", "_source_payload w9.gzdio", str(spec)])
    assert p.returncode == 0, p.stdout + p.stderr
    srpms = list((top / "SRPMS").glob("*.src.rpm"))
    assert len(srpms) == 1
    return str(srpms[0])


def extract(rpm, member, dest):
    os.makedirs(dest, exist_ok=True)
    p1 = subprocess.Popen(["rpm2cpio", rpm], stdout=subprocess.PIPE)
    subprocess.run(["cpio", "-idm", "--quiet", member], stdin=p1.stdout, cwd=dest,
                   stderr=subprocess.PIPE)
    p1.stdout.close()
    p1.wait()
    with open(os.path.join(dest, member.lstrip("./"))) as f:
        return f.read()


def rpmq(path, fmt):
    p = run(["rpm", "-qp", "--nosignature", "--qf", fmt, path])
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kernel")
    srpm = build_fake_srpm(tmp)
    out = tmp / "out"
    p = run(["python3", TOOL, "--srpm", srpm, "--out", str(out)], timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    return dict(out=str(out), srpm=srpm, tmp=tmp, log=p.stderr)


def test_rebuild_names_release_and_layout(rebuilt):
    out = rebuilt["out"]
    rpms = sorted(f for f in os.listdir(out) if f.endswith(".rpm"))
    want = ["kernel-kdump-%s-%s%s.i686.rpm" % (VERSION, RELEASE, SUFFIX),
            "kernel-xen-%s-%s%s.i686.rpm" % (VERSION, RELEASE, SUFFIX)]
    assert rpms == want, rpms
    for f, flavour in zip(rpms, ("kdump", "xen")):
        path = os.path.join(out, f)
        n, v, r, a, g, comp = rpmq(path, "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{GROUP}|"
                                         "%{PAYLOADCOMPRESSOR}").split("|")
        assert (v, r, a) == (VERSION, RELEASE + SUFFIX, "i686")
        assert g.endswith("/Kernel") and comp == "gzip"
        files = rpmq(path, "[%{FILENAMES}\n]").split()
        moddirs = set(re.match(r"^/lib/modules/([^/]+)", x).group(1)
                      for x in files if x.startswith("/lib/modules/"))
        assert moddirs == {KVER + flavour}, moddirs
        assert "/boot/vmlinuz-%s%s" % (KVER, flavour) in files


def test_rebuild_configs_carry_the_fragment(rebuilt):
    frag = dict(read_assignments(FRAGMENT))
    for flavour in ("xen", "kdump"):
        rpm = os.path.join(rebuilt["out"], "kernel-%s-%s-%s%s.i686.rpm"
                           % (flavour, VERSION, RELEASE, SUFFIX))
        cfg = extract(rpm, "./boot/config-%s%s" % (KVER, flavour),
                      str(rebuilt["tmp"] / ("x-" + flavour)))
        vals = dict(read_assignments(cfg, is_text=True))
        for sym in REFERENCE_OPTIONS:
            assert vals.get(sym) == frag[sym], (flavour, sym, vals.get(sym))
        assert vals["NETFILTER_XTABLES"] == "y"     # vendor's y kept
        if flavour == "xen":
            assert vals["XEN"] == "y"
        else:
            assert vals["XEN"] == "n" and vals["CRASH_DUMP"] == "y"


def test_rebuilt_srpm_keeps_other_arches_untouched(rebuilt):
    srpms = os.listdir(os.path.join(rebuilt["out"], "SRPMS"))
    assert srpms == ["kernel-%s-%s%s.src.rpm" % (VERSION, RELEASE, SUFFIX)], srpms
    srpm = os.path.join(rebuilt["out"], "SRPMS", srpms[0])
    x64 = extract(srpm, "kernel-2.6.32-x86_64-xen.config", str(rebuilt["tmp"] / "s1"))
    assert x64 == STOCK_X86_64_XEN
    spec = extract(srpm, "kernel.spec", str(rebuilt["tmp"] / "s2"))
    assert re.search(r"^%%define release %s%s$" % (re.escape(RELEASE), re.escape(SUFFIX)),
                     spec, re.M), "suffix not added to the release macro"


def test_rebuild_manifest_for_the_pack(rebuilt):
    with open(os.path.join(rebuilt["out"], "kernel-packages.json")) as f:
        man = json.load(f)
    kernels = sorted((p["flavour"], p["kernel"], p["file"]) for p in man["packages"])
    assert kernels == [("kdump", KVER + "kdump",
                        "kernel-kdump-%s-%s%s.i686.rpm" % (VERSION, RELEASE, SUFFIX)),
                       ("xen", KVER + "xen",
                        "kernel-xen-%s-%s%s.i686.rpm" % (VERSION, RELEASE, SUFFIX))]
    assert man["suffix"] == SUFFIX
    files = sorted(c["file"] for c in man["configs"])
    assert files == ["kernel-2.6.32-i686-kdump.config", "kernel-2.6.32-i686-xen.config"]


def test_rebuild_refuses_xen_without_kdump(tmp_path):
    srpm = build_fake_srpm(tmp_path, with_kdump_package=False)
    p = run(["python3", TOOL, "--srpm", srpm, "--out", str(tmp_path / "out")], timeout=600)
    assert p.returncode == 1
    assert "no matching kdump" in p.stderr, p.stderr
    assert not (tmp_path / "out" / "kernel-packages.json").exists()


def test_rebuild_refuses_srpm_without_i686_xen_config(tmp_path):
    srpm = build_fake_srpm(tmp_path, with_kdump_package=False, configs={
        "kernel-2.6.32-i686-xen.config": STOCK_I686_XEN,
        "kernel-2.6.32-i686-kdump.config": STOCK_I686_KDUMP,
        "kernel-2.6.32-x86_64-xen.config": STOCK_X86_64_XEN,
    })
    # Same SRPM, but tell the tool the only config is a kdump one: no xen config.
    p = run(["python3", TOOL, "--srpm", srpm, "--out", str(tmp_path / "out"),
             "--config", "kernel-2.6.32-i686-kdump.config:kdump"])
    assert p.returncode == 1
    assert "no i686 xen config" in p.stderr, p.stderr


def test_release_suffix_without_macro(tool):
    text = "Name: kernel\nVersion: 2.6.18\nRelease: 128.1.6.el5.xs5.5.0.502.1014\n"
    new, how = tool.add_release_suffix(text, SUFFIX)
    assert "Release: 128.1.6.el5.xs5.5.0.502.1014.vifrules1\n" in new
    again, _ = tool.add_release_suffix(new, SUFFIX)
    assert again == new
