"""Host readiness (issue 5): fixture trees of the files a dom0 check reads,
and this machine for real inside a network namespace."""

import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest

import py24check
from vifrules import readiness
from vifrules.config import Config
from vifrules.errors import HostNotReady

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.join(TOP, "xapi-plugin")
MODULE = os.path.join(PLUGIN, "vifrules", "readiness.py")
DOM0_PYTHONS = {"2.7": "/root/.pyenv/versions/2.7.18/bin/python",
                "3.6": "/root/.pyenv/versions/3.6.15/bin/python"}

FP1_RELEASE = "2.6.32.12-0.7.1.xs5.6.100.323.170596xen"
PACK_OPTIONS = [o for o, _ in readiness.KERNEL_OPTIONS]
SYSCTLS = ["bridge-nf-call-iptables", "bridge-nf-call-arptables", "bridge-nf-call-ip6tables"]
TOOLS = ["iptables", "iptables-restore", "iptables-save",
         "ip6tables", "ip6tables-restore", "ip6tables-save",
         "ebtables", "ebtables-restore", "ebtables-save", "arptables"]
HERE_TOOLS = {"IPTABLES": "iptables-legacy", "IP6TABLES": "ip6tables-legacy",
              "EBTABLES": "ebtables-nft", "ARPTABLES": "arptables-legacy"}


# ------------------------------------------------------------ fixture trees

def write(root, path, text, mode=0o644):
    full = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    data = text if isinstance(text, bytes) else text.encode()
    with open(full, "wb") as handle:
        handle.write(data)
    os.chmod(full, mode)
    return full


def kernel_config(values):
    """values: {option: 'y'|'m'|None (is not set)}."""
    lines = ["# Linux kernel configuration (fixture)"]
    for option, value in values.items():
        if value is None:
            lines.append("# %s is not set" % option)
        else:
            lines.append("%s=%s" % (option, value))
    return "\n".join(lines) + "\n"


def build_tree(root, release="4.19.0+1", config=None, config_gz=False, sysctls=None,
               bridge_dir=True, network="bridge", matches=("physdev", "mac", "u32", "mark"),
               tools=TOOLS, arp_tables_names="filter\n", modules=()):
    write(root, "/proc/sys/kernel/osrelease", release + "\n")
    if config is not None:
        text = kernel_config(config)
        if config_gz:
            write(root, "/proc/config.gz", gzip.compress(text.encode()))
        else:
            write(root, "/boot/config-%s" % release, text)
    if bridge_dir:
        os.makedirs(os.path.join(root, "proc/sys/net/bridge"), exist_ok=True)
    for name, value in (sysctls or {}).items():
        write(root, "/proc/sys/net/bridge/%s" % name, "%s\n" % value)
    if network is not None:
        write(root, "/etc/xensource/network.conf", network + "\n")
    if matches is not None:
        listing = "".join(m + "\n" for m in list(matches) + ["icmp", "udp", "tcp"])
        write(root, "/proc/net/ip_tables_matches", listing)
        write(root, "/proc/net/ip6_tables_matches", listing.replace("icmp\n", "icmp6\n"))
    if arp_tables_names is not None:
        write(root, "/proc/net/arp_tables_names", arp_tables_names)
    for tool in tools:
        write(root, "/sbin/%s" % tool, "#!/bin/sh\necho '%s v0.0-fixture'\n" % tool, 0o755)
    for module in modules:
        write(root, "/lib/modules/%s/kernel/net/netfilter/%s.ko" % (release, module), "")
    write(root, "/proc/modules", "bridge 45000 0 - Live 0x00000000\n")
    return root


def fp1_host(root):
    """XenServer 5.6 FP1 as shipped: no physdev, ebtables or arptables;
    CentOS 5 userland with iptables 1.3.5 only."""
    config = dict((o, None) for o in PACK_OPTIONS)
    config.update({"CONFIG_BRIDGE_NETFILTER": "y", "CONFIG_IP6_NF_IPTABLES": "m",
                   "CONFIG_IP6_NF_FILTER": "m", "CONFIG_NETFILTER_XT_MATCH_MAC": "m",
                   "CONFIG_NETFILTER_XT_MATCH_U32": "m", "CONFIG_BRIDGE": "m"})
    return build_tree(root, release=FP1_RELEASE, config=config,
                      sysctls={"bridge-nf-call-iptables": 0, "bridge-nf-call-ip6tables": 0},
                      matches=("mac",), arp_tables_names=None,
                      tools=["iptables", "iptables-restore", "iptables-save",
                             "ip6tables", "ip6tables-restore", "ip6tables-save"],
                      modules=("xt_u32",))


def ready_host(root, network="bridge", **overrides):
    config = {}
    for number, option in enumerate(PACK_OPTIONS):
        config[option] = "ym"[number % 2]
    settings = dict(config=config, config_gz=True, network=network,
                    sysctls=dict((s, 1) for s in SYSCTLS))
    settings.update(overrides)
    return build_tree(root, **settings)


def by_name(items):
    names = [i["item"] for i in items]
    assert len(names) == len(set(names)), names
    return dict((i["item"], i) for i in items)


@pytest.fixture
def no_commands(monkeypatch):
    """Fail the test if the check runs anything."""
    def refuse(*args, **kwargs):
        raise AssertionError("a command was run: %r" % (args,))
    monkeypatch.setattr(readiness, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)


# ------------------------------------------------------------ (a) 5.6 FP1

def test_fp1_host_without_the_options_is_not_ready(tmp_path, no_commands):
    root = fp1_host(str(tmp_path))
    items = readiness.check(Config(), root=root, run_commands=False)
    found = by_name(items)
    for option in ("CONFIG_NETFILTER_XT_MATCH_PHYSDEV", "CONFIG_BRIDGE_NF_EBTABLES",
                   "CONFIG_BRIDGE_EBT_T_FILTER", "CONFIG_BRIDGE_EBT_T_NAT",
                   "CONFIG_BRIDGE_EBT_IP", "CONFIG_BRIDGE_EBT_ARP", "CONFIG_BRIDGE_EBT_IP6",
                   "CONFIG_IP_NF_ARPTABLES", "CONFIG_IP_NF_ARPFILTER"):
        item = found["kernel option %s" % option]
        assert item["state"] == "missing" and not item["ok"], item
        assert "is not set in /boot/config-%s" % FP1_RELEASE in item["detail"]
        assert item["provided_by"] == readiness.KERNEL
    for option in ("CONFIG_BRIDGE_NETFILTER", "CONFIG_IP6_NF_IPTABLES", "CONFIG_IP6_NF_FILTER"):
        assert found["kernel option %s" % option]["ok"]
    assert found["kernel config"]["detail"] == "/boot/config-%s for %s" % (FP1_RELEASE,
                                                                          FP1_RELEASE)
    assert found["network backend"]["ok"]
    assert found["/proc/sys/net/bridge"]["ok"]
    # no bridge-nf-call-arptables file: the kernel lacks it, setup cannot set it
    arp = found["sysctl net.bridge.bridge-nf-call-arptables"]
    assert arp["state"] == "missing" and arp["provided_by"] == readiness.KERNEL
    # present but 0: host-rules start sets it
    ipt = found["sysctl net.bridge.bridge-nf-call-iptables"]
    assert ipt["state"] == "pending" and not ipt["ok"]
    assert ipt["provided_by"] == "host-rules start (sets the sysctl)"
    assert found["iptables physdev match"]["state"] == "missing"
    assert found["iptables mac match"]["ok"]  # listed
    assert found["ip6tables u32 match"]["ok"]  # =m and the module file is there
    assert "xt_u32" in found["ip6tables u32 match"]["detail"]
    assert found["ebtables tool"]["state"] == "missing"
    assert found["ebtables tool"]["provided_by"] == "ebtables RPM in the pack"
    assert found["arptables tool"]["provided_by"] == "arptables RPM in the pack"
    assert found["iptables tool"]["ok"]
    assert found["ebtables filter table"]["state"] == "skipped"
    assert found["arptables FORWARD chain"]["state"] == "skipped"
    assert not readiness.is_ready(items)

    report = readiness.format_report(items)
    assert ("[FAIL] kernel option CONFIG_BRIDGE_EBT_ARP: is not set in /boot/config-%s "
            "-> provided by kernel-vifrules (pack kernel RPM)" % FP1_RELEASE) in report
    assert ("[FAIL] sysctl net.bridge.bridge-nf-call-iptables: 0, not 1 -> provided by "
            "host-rules start (sets the sysctl)") in report
    assert "[ OK ] network backend: bridge (/etc/xensource/network.conf)" in report
    assert report[-1].startswith("NOT READY: ")
    assert len(report) == len(items) + 1

    with pytest.raises(HostNotReady) as caught:
        readiness.require_ready(Config(), root=root, run_commands=False)
    error = caught.value
    assert error.code == "VIF_RULES_HOST_NOT_READY"
    assert error.params[0].startswith("kernel option CONFIG_NETFILTER_XT_MATCH_PHYSDEV: ")
    assert error.params[1] == "provided by kernel-vifrules (pack kernel RPM)"


# ------------------------------------------------------------ (b) a ready host

def test_ready_host_with_config_gz(tmp_path, no_commands):
    root = ready_host(str(tmp_path))
    items = readiness.check(Config(), root=root, run_commands=False)
    found = by_name(items)
    assert found["kernel config"]["detail"].startswith("/proc/config.gz for 4.19.0+1")
    for option in PACK_OPTIONS:
        assert found["kernel option %s" % option]["ok"], option
    bad = [i for i in items if i["state"] not in ("ok", "skipped")]
    assert bad == []
    skipped = sorted(i["item"] for i in items if i["state"] == "skipped")
    assert skipped == ["ebtables filter table", "ebtables nat table",
                       "ip6tables filter table", "iptables filter table"]
    assert found["arptables FORWARD chain"]["detail"] == \
        "filter table listed in /proc/net/arp_tables_names"
    assert readiness.is_ready(items)
    assert readiness.format_report(items)[-1] == "READY"
    assert readiness.require_ready(Config(), root=root, run_commands=False) == items


def test_sysctls_at_zero_are_pending_not_a_refusal(tmp_path, no_commands):
    root = ready_host(str(tmp_path), sysctls=dict((s, 0) for s in SYSCTLS))
    items = readiness.check(Config(), root=root, run_commands=False)
    pending = [i["item"] for i in items if i["state"] == "pending"]
    assert pending == ["sysctl net.bridge.%s" % s for s in SYSCTLS]
    assert not readiness.is_ready(items)
    assert readiness.not_ready(items, for_setup=True) == []
    readiness.require_ready(Config(), root=root, run_commands=False)  # setup_host sets them


def test_no_kernel_config_reports_unknown(tmp_path, no_commands):
    root = ready_host(str(tmp_path), config=None)
    items = readiness.check(Config(), root=root, run_commands=False)
    found = by_name(items)
    for option in PACK_OPTIONS:
        item = found["kernel option %s" % option]
        assert item["state"] == "unknown" and item["ok"] is False
        assert item["detail"].startswith("no kernel config found (/proc/config.gz, "
                                         "/boot/config-4.19.0+1)")
    report = readiness.format_report(items)
    assert [l for l in report if l.startswith("[ ?? ] kernel option CONFIG_IP_NF_ARPFILTER: "
                                              "no kernel config found")]
    # the runtime items (matches listed, tools) still decide
    assert readiness.is_ready(items)
    assert report[-1] == "READY; %d item(s) unknown" % (len(PACK_OPTIONS) + 1)


def test_module_option_needs_the_module_file(tmp_path, no_commands):
    config = dict((o, "y") for o in PACK_OPTIONS)
    config["CONFIG_NETFILTER_XT_MATCH_PHYSDEV"] = "m"
    root = ready_host(str(tmp_path), config=config, config_gz=False,
                      matches=("mac", "u32", "mark"))
    found = by_name(readiness.check(Config(), root=root, run_commands=False))
    assert found["iptables physdev match"]["state"] == "missing"
    assert "no xt_physdev module" in found["iptables physdev match"]["detail"]
    write(root, "/lib/modules/4.19.0+1/kernel/net/netfilter/xt_physdev.ko", "")
    found = by_name(readiness.check(Config(), root=root, run_commands=False))
    assert found["iptables physdev match"]["ok"]
    assert found["ip6tables physdev match"]["ok"]


def test_missing_restore_tool_and_disabled_family(tmp_path, no_commands):
    root = ready_host(str(tmp_path), config=dict((o, "y") for o in PACK_OPTIONS),
                      tools=[t for t in TOOLS if t != "ebtables-restore"])
    shutil.rmtree(os.path.join(root, "proc/net"))
    found = by_name(readiness.check(Config({"ARPTABLES": ""}), root=root, run_commands=False))
    assert found["ebtables restore tool"]["state"] == "missing"
    assert found["ebtables save tool"]["ok"]
    assert found["arptables tool"]["state"] == "skipped"
    assert found["kernel option CONFIG_IP_NF_ARPFILTER"]["state"] == "skipped"
    # no /proc/net listings: the config decides
    assert found["iptables physdev match"]["detail"] == \
        "built in (CONFIG_NETFILTER_XT_MATCH_PHYSDEV=y)"
    with pytest.raises(HostNotReady) as caught:
        readiness.require_ready(Config({"ARPTABLES": ""}), root=root, run_commands=False)
    assert caught.value.params[1] == "provided by ebtables RPM in the pack"


# ------------------------------------------------------------ (c) openvswitch

def test_openvswitch_host_is_told_what_it_lacks(tmp_path, no_commands):
    """An openvswitch host is not refused: the check lists what the OpenFlow
    backend needs (here: the tools, absent from the fixture tree) and leaves
    the netfilter items out."""
    root = ready_host(str(tmp_path), network="openvswitch")
    items = readiness.check(Config(), root=root, run_commands=False)
    found = by_name(items)
    backend = found["network backend"]
    assert backend["state"] == "ok"
    assert backend["detail"].startswith("openvswitch (/etc/xensource/network.conf)")
    for tool in ("ovs-vsctl", "ovs-ofctl", "tc"):
        assert found["%s tool" % tool]["state"] == "missing"
    for option in readiness.OVS_KERNEL_OPTIONS:  # the guest ports' device filter
        assert found["kernel option %s" % option]["state"] == "missing"
    assert found["iptables physdev match"]["state"] == "skipped"
    assert "openvswitch backend" in found["iptables physdev match"]["detail"]
    assert not readiness.is_ready(items)
    with pytest.raises(HostNotReady) as caught:
        readiness.require_ready(Config(), root=root, run_commands=False)
    error = caught.value
    assert error.code == "VIF_RULES_HOST_NOT_READY"
    assert "ovs-vsctl" in error.params[0]
    assert "openvswitch" in error.params[1]
    for tool in ("ovs-vsctl", "ovs-ofctl"):
        write(root, "/usr/sbin/" + tool, "#!/bin/sh\n")
        os.chmod(os.path.join(root, "usr/sbin", tool), 0o755)
    still = readiness.not_ready(readiness.check(Config(), root=root, run_commands=False))
    assert sorted(i["item"] for i in still) == sorted(
        ["tc tool"] + ["kernel option %s" % o for o in readiness.OVS_KERNEL_OPTIONS])
    write(root, "/sbin/tc", "#!/bin/sh\n", 0o755)
    config = dict((o, "y") for o in PACK_OPTIONS)
    config.update(dict((o, "m") for o in readiness.OVS_KERNEL_OPTIONS))
    write(root, "/proc/config.gz", gzip.compress(kernel_config(config).encode()))
    assert readiness.is_ready(readiness.check(Config(), root=root, run_commands=False))


def test_backend_in_the_config_overrides_network_conf(tmp_path, no_commands):
    root = ready_host(str(tmp_path), network="openvswitch")
    found = by_name(readiness.check(Config({"BACKEND": "bridge"}), root=root,
                                    run_commands=False))
    assert found["network backend"]["detail"].startswith("bridge (BACKEND=bridge")
    assert found["iptables physdev match"]["state"] == "ok"


def test_missing_network_conf_is_not_openvswitch(tmp_path, no_commands):
    root = ready_host(str(tmp_path), network=None)
    items = readiness.check(Config(), root=root, run_commands=False)
    backend = by_name(items)["network backend"]
    assert backend["state"] == "skipped"
    assert "not a XenServer host" in backend["detail"]
    readiness.require_ready(Config(), root=root, run_commands=False)


def test_network_conf_path_comes_from_the_config(tmp_path, no_commands):
    root = ready_host(str(tmp_path), network=None)
    write(root, "/etc/other-network.conf", "openvswitch\n")
    cfg = Config({"XENSOURCE_NETWORK_CONF": "/etc/other-network.conf"})
    with pytest.raises(HostNotReady) as caught:
        readiness.require_ready(cfg, root=root, run_commands=False)
    assert "ovs-vsctl" in caught.value.params[0]


# ------------------------------------------------------------ dom0 Pythons

def test_readiness_uses_only_python_24_constructs():
    with open(MODULE) as handle:
        assert py24check.problems(handle.read(), MODULE) == []


DOM0_SCRIPT = r"""
import sys
sys.path.insert(0, "xapi-plugin")
from vifrules import readiness
from vifrules.config import Config
from vifrules import jsontext as json
items = readiness.check(Config(), root=sys.argv[1], run_commands=False)
sys.stdout.write(json.dumps({"items": items, "lines": readiness.format_report(items)}))
"""


@pytest.mark.parametrize("version", sorted(DOM0_PYTHONS))
def test_runs_on_dom0_pythons(tmp_path, version):
    python = DOM0_PYTHONS[version]
    if not os.path.exists(python):
        pytest.skip("%s not installed" % python)
    root = ready_host(str(tmp_path / "ready"))
    result = subprocess.run([python, "-c", DOM0_SCRIPT, root], cwd=TOP, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    theirs = json.loads(result.stdout)
    ours = readiness.check(Config(), root=root, run_commands=False)
    assert theirs["items"] == ours
    assert theirs["lines"][-1] == "READY"
    fp1 = fp1_host(str(tmp_path / "fp1"))
    result = subprocess.run([python, "-c", DOM0_SCRIPT, fp1], cwd=TOP, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["items"] == readiness.check(Config(), root=fp1,
                                                                 run_commands=False)


# ------------------------------------------------------------ (d) this machine

REAL_SCRIPT = r"""
import sys
sys.path.insert(0, "xapi-plugin")
from vifrules import readiness
from vifrules import jsontext as json
from vifrules.config import Config
from vifrules.errors import HostNotReady
cfg = Config(json.loads(sys.argv[1]))
items = readiness.check(cfg)
try:
    readiness.require_ready(cfg)
    refusal = None
except HostNotReady:
    refusal = sys.exc_info()[1].params
sys.stdout.write(json.dumps({"items": items, "lines": readiness.format_report(items),
                             "refusal": refusal}))
"""


@pytest.fixture
def namespace():
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a network namespace (ip netns add)")
    if shutil.which("ip") is None:
        pytest.skip("no 'ip' command")
    name = "vrtest-ready-%d" % os.getpid()
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip("cannot create a network namespace: %s" % made.stderr.strip())
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def in_namespace(name, argv):
    return subprocess.run(["ip", "netns", "exec", name] + argv, cwd=TOP, capture_output=True,
                          text=True, timeout=120)


def real_check(name, values):
    result = in_namespace(name, [sys.executable, "-c", REAL_SCRIPT, json.dumps(values)])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def own_kernel_config():
    """This machine's kernel config, read independently of readiness."""
    release = os.uname().release
    if os.path.exists("/proc/config.gz"):
        with gzip.open("/proc/config.gz", "rt") as handle:
            return handle.read(), "/proc/config.gz"
    path = "/boot/config-%s" % release
    if os.path.exists(path):
        with open(path) as handle:
            return handle.read(), path
    return None, None


def test_this_machine_for_real(namespace):
    for tool in HERE_TOOLS.values():
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed here" % tool)
    outcome = real_check(namespace, HERE_TOOLS)
    items, lines = outcome["items"], outcome["lines"]
    found = by_name(items)
    assert len(lines) == len(items) + 1

    for family in ("iptables", "ip6tables", "ebtables", "arptables"):
        item = found["%s tool" % family]
        assert item["ok"], item
        version = subprocess.run([HERE_TOOLS[family.upper()], "--version"],
                                 capture_output=True, text=True).stdout.strip().splitlines()[0]
        assert item["detail"].endswith(": " + version)
    for family in ("iptables", "ip6tables", "ebtables"):
        assert found["%s restore tool" % family]["ok"]
        assert found["%s save tool" % family]["ok"]
    for name in ("iptables filter table", "ip6tables filter table", "ebtables filter table",
                 "ebtables nat table", "arptables FORWARD chain"):
        assert found[name]["ok"], found[name]
    for name in ("iptables physdev match", "iptables mac match", "ip6tables physdev match",
                 "ip6tables mac match", "ip6tables u32 match"):
        assert found[name]["ok"], found[name]
    assert found["/proc/sys/net/bridge"]["ok"]
    for sysctl in SYSCTLS:
        item = found["sysctl net.bridge.%s" % sysctl]
        value = in_namespace(namespace, ["cat", "/proc/sys/net/bridge/%s" % sysctl]).stdout
        assert item["state"] == (value.strip() == "1" and "ok" or "pending"), item

    if os.path.exists("/etc/xensource/network.conf"):
        assert found["network backend"]["state"] in ("ok", "missing")
    else:
        assert found["network backend"]["state"] == "skipped"
        assert "not a XenServer host" in found["network backend"]["detail"]

    text, source = own_kernel_config()
    if text is None:
        for option in PACK_OPTIONS:
            item = found["kernel option %s" % option]
            assert item["state"] == "unknown"
            assert item["detail"].startswith("no kernel config found")
        assert [l for l in lines if l.startswith("[ ?? ] kernel option ")]
    else:
        assert found["kernel config"]["detail"].startswith(source + " for ")
        for option in PACK_OPTIONS:
            item = found["kernel option %s" % option]
            value = None
            for line in text.splitlines():
                if line.startswith(option + "="):
                    value = line.split("=", 1)[1]
            if value in ("y", "m"):
                assert item["ok"] and item["detail"].startswith("=" + value), item
            elif item["ok"]:
                # only the legacy ebtables tables may be stood in for by nf_tables
                assert option in readiness.NFT_EBTABLES_REPLACES
                assert "CONFIG_NF_TABLES_BRIDGE" in item["detail"]
            else:
                assert item["state"] == "missing"
    # these tools work here: setup_host would not be refused
    assert outcome["refusal"] is None, outcome["refusal"]


def test_this_machine_with_legacy_ebtables(namespace):
    """Can fail: ebtables-legacy needs the legacy ebtables tables in the kernel."""
    if shutil.which("ebtables-legacy") is None:
        pytest.skip("ebtables-legacy is not installed here")
    values = dict(HERE_TOOLS, EBTABLES="ebtables-legacy")
    outcome = real_check(namespace, values)
    found = by_name(outcome["items"])
    works = in_namespace(namespace, ["ebtables-legacy", "-t", "filter", "-L"]).returncode == 0
    assert found["ebtables filter table"]["ok"] == works
    if not works:
        assert found["ebtables filter table"]["state"] == "missing"
        assert outcome["refusal"] is not None
        # the kernel's legacy ebtables tables, or the table probe itself
        assert "EBT" in outcome["refusal"][0].upper()
        report = [l for l in outcome["lines"] if l.startswith("[FAIL] ebtables filter table")]
        assert report and report[0].endswith("-> provided by kernel-vifrules (pack kernel RPM)")


def test_host_rules_check_and_start_refuse_an_openvswitch_host(tmp_path, require_netns):
    """The CLI over the same check: 'check' lists items and exits 1 when not
    ready; on an openvswitch host whose switch does not answer, 'start'
    refuses with what is missing and changes nothing."""
    import netbed
    with netbed.NetBed(str(tmp_path), backend="legacy", guests=[]) as bed:
        ready = bed.host_rules("check", check=False)
        assert ready.stdout.strip().splitlines()[-1].startswith(("READY", "NOT READY"))
        assert "[ OK ] iptables physdev match" in ready.stdout
        network_conf = tmp_path / "network.conf"
        network_conf.write_text("openvswitch\n")
        bed.write_config(XENSOURCE_NETWORK_CONF=str(network_conf))
        env = bed.env()
        env["OVS_RUNDIR"] = str(tmp_path / "no-switch")  # no database answers there
        refused = bed.run("h", [sys.executable, netbed.HOST_RULES, "start"], check=False,
                          env=env)
        assert refused.returncode == 4, refused.stderr
        assert "ovs-" in refused.stderr
        assert "VR-FORWARD" not in bed.ruleset()
        report = bed.run("h", [sys.executable, netbed.HOST_RULES, "check"], check=False,
                         env=env)
        assert report.returncode == 1
        assert "[ OK ] network backend: openvswitch" in report.stdout
        assert "[SKIP] iptables physdev match" in report.stdout
