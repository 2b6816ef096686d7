"""Hostile input, generated: every entry point under Python 2.7 and 3.6.

hypothesis makes the inputs here; a driver per dom0 Python (tests/
hostile_driver.py, started once in the bed's host namespace, real tools,
a protected host with three guests) runs each through the real entry
point and answers. For every case: a documented exit status or Failure
code, never a traceback, one line on stderr quoting every param escaped
(CODE: name="...", ...), the same error at LOG_ERR in syslog. Every input
is refused by construction (a validated field is broken), so nothing may
change: every family's dump and the records are compared before and after
each test's run and around a sample of single cases.
"""

import binascii
import json
import os
import re
import string
import subprocess

import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

import netbed
from test_lifecycle import PYTHONS

from vifrules import errors

CASES = 1000            # per entry point and Python
BATCH = 10              # cases per hypothesis example, sent to the drivers at once
SAMPLE_EVERY = 5        # a dump before and after each 5th batch too
DUMP_COMMANDS = [["iptables-legacy-save"], ["ip6tables-legacy-save"], ["ebtables-nft-save"],
                 ["arptables-legacy-save"]]
EXIT = dict((row[1], row[2]) for row in errors.table())
PRINTABLE = set(chr(c) for c in range(0x20, 0x7f))
PARAM = r'"(?:[ !#-\[\]-~]|\\.)*"'
MESSAGE = re.compile(r"^(VIF_RULES_[A-Z_]+): (?:[a-z_]+=%s)(?:, (?:[a-z_]+=)?%s)*$" % (PARAM, PARAM))
DRIVER = os.path.join(netbed.TOP, "tests", "hostile_driver.py")
VERSIONS = ("2.7", "3.6")
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="vif-rules-hypothesis-"))  # not in the tree


# ------------------------------------------------------------ the drivers

class Driver(object):
    def __init__(self, bed, version):
        self.version = version
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", bed.ns("h"), PYTHONS[version], DRIVER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=bed.env(),
            universal_newlines=True)
        self.send({"dump_commands": DUMP_COMMANDS, "state_dir": bed.state_dir,
                   "scratch_config": os.path.join(bed.workdir, "hostile-%s.conf" % version)})
        assert self.process.stdout.readline() == "ready\n"
        self.cases = 0

    def send(self, message):
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def ask(self, case):
        self.send(case)
        return self.answer()

    def answer(self):
        line = self.process.stdout.readline()
        assert line, "the %s driver died" % self.version
        return json.loads(line)

    def dump(self):
        return self.ask({"entry": "dump"})["dump"]

    def stop(self):
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def drivers(tmp_path_factory):
    reason = netbed.available()
    if reason:
        pytest.skip(reason)
    missing = [v for v in VERSIONS if not os.path.exists(PYTHONS[v])]
    if missing:
        pytest.skip("Python %s not installed under /root/.pyenv" % ", ".join(missing))
    bed = netbed.NetBed(str(tmp_path_factory.mktemp("hostile")), backend="legacy")
    started = []
    with bed:
        bed.protect_all()
        try:
            for version in VERSIONS:
                started.append(Driver(bed, version))
            yield Drivers(bed, started)
        finally:
            for driver in started:
                driver.stop()


class Drivers(object):
    def __init__(self, bed, started):
        self.bed, self.started = bed, started


def run_cases(drivers, strategy, judge):
    """CASES generated cases through every driver, judged one by one; the
    rules and records unchanged over the run and around each sample."""
    drivers = drivers.started
    before = drivers[0].dump()
    counted = []

    @settings(max_examples=CASES // BATCH, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(strategy, min_size=BATCH, max_size=BATCH))
    def each(cases):
        counted.extend(cases)
        sample = len(counted) % (SAMPLE_EVERY * BATCH) == 0
        for driver in drivers:  # both at work at once
            for case in cases:
                driver.send(case)
        answers = [[driver.answer() for _ in cases] for driver in drivers]  # all, in step
        for driver, answered in zip(drivers, answers):
            for case, answer in zip(cases, answered):
                assert "traceback" not in answer, (driver.version, answer["traceback"])
                judge(case, answer)
            if sample:
                assert driver.dump() == before, "a refused input changed rules or records"

    each()
    assert len(counted) >= CASES
    for driver in drivers:
        assert driver.dump() == before, "rules or records changed (%s)" % driver.version


# ------------------------------------------------------------ judging

def printable(text):
    return set(text) <= PRINTABLE


def check_logged(answer, message):
    """The error once at LOG_ERR, its message exactly, every line printable."""
    errors_logged = [m for p, _, m in answer["syslog"] if p == 3 and m.startswith("error: VIF")]
    assert errors_logged == ["error: " + message], answer["syslog"]
    assert all(printable(m) for _, _, m in answer["syslog"]), answer["syslog"]


def check_cli(answer, ident, codes):
    assert answer["stdout"] == "", answer
    stderr = answer["stderr"]
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    line = stderr[:-1]
    assert printable(line), line
    prefix = ident + ": error: "
    assert line.startswith(prefix), line
    message = line[len(prefix):]
    match = MESSAGE.match(message)
    assert match, "not CODE: name=\"escaped\", ...: %r" % message
    assert match.group(1) in codes, message
    assert answer["status"] == EXIT[match.group(1)], (answer["status"], message)
    check_logged(answer, message)


def judge_hook(case, answer):
    check_cli(answer, "vif_rules", ("VIF_RULES_INVALID_ARGUMENT",))


def judge_config(case, answer):
    check_cli(answer["hook"], "vif_rules", ("VIF_RULES_BAD_CONFIG",))
    check_cli(answer["host_rules"], "host-rules", ("VIF_RULES_BAD_CONFIG",))


def judge_plugin(case, answer):
    reply = answer["reply"]
    assert printable(answer["stdout"].replace("\n", "")), answer["stdout"]
    assert reply["Status"] == "Failure", reply
    details = reply["ErrorDescription"]
    assert details[0] == "VIF_RULES_INVALID_ARGUMENT", details
    assert all(isinstance(p, str) and printable(p) for p in details[1:]), details
    names = errors.InvalidArgument.param_names
    message = "VIF_RULES_INVALID_ARGUMENT: " + ", ".join(
        '%s="%s"' % (n, p) for n, p in zip(names, details[1:]))
    assert len(details) == 4 and MESSAGE.match(message), details
    check_logged(answer, message)


# ------------------------------------------------------------ the inputs

# Characters that break any field they are put into: controls, quotes,
# shell and option characters, non-ASCII, astral, lone surrogates (argv
# bytes that are not UTF-8 arrive as those on Python 3).
HOSTILE_CHARS = (
    [chr(c) for c in range(0x80)] +                                   # all of ASCII
    [chr(c) for c in range(0x80, 0xa1)] + ["\xad", "\xe9", "\xdf", "\xff"] +  # C1, latin-1
    ["\u0131", "\u0301", "\u0661", "\u0966", "\u1680", "\u2000", "\u2003", "\u200b",
     "\u2028", "\u2029", "\u202e", "\u202f", "\u205f", "\u212a", "\u3000", "\ufeff",
     "\ufffd", "\uff11", "\uff56", "\ud800", "\udbff", "\udc00", "\udcff", "\udfff",
     "\U0001f4a9", "\U0010ffff"] +
    [chr(c) for c in range(0xa1, 0x110000, 4099)])                   # a spread of every plane
# Characters that break any field they are put into: controls, quotes,
# shell and option characters, spaces and digits of other scripts, format
# characters, astral, lone surrogates (argv bytes that are not UTF-8 arrive
# as those on Python 3), and a spread of every plane. A fixed list: drawing
# from it costs a third of st.characters(), and 18,000 runs add up.
ANY_CHAR = st.sampled_from(HOSTILE_CHARS)


def chars_where(keep):
    """The hostile characters keep() takes. Not ANY_CHAR.filter(keep): st.text()
    draws from a sampled_from's list and would skip the filter."""
    return st.sampled_from([c for c in HOSTILE_CHARS if keep(c)])
ALNUM = set(string.ascii_letters + string.digits)


def breaking(allowed):
    """A character not in allowed, nor a space of any Python (a space can split
    a list into valid items)."""
    return chars_where(lambda c: c not in allowed and not c.isspace())


def inserted(text, chars):
    """text with one or more of chars put in at random places."""
    return st.tuples(st.lists(st.tuples(st.integers(0, len(text)), chars), min_size=1,
                              max_size=4)).map(lambda t: _insert(text, t[0]))


def _insert(text, edits):
    for at, char in sorted(edits, reverse=True):
        text = text[:at] + char + text[at:]
    return text


def arg_bytes(text):
    """An argument's bytes; argv cannot hold a NUL, so \x01 stands in for it
    (still a character no field takes)."""
    return text.encode("utf-8", "surrogatepass").replace(b"\x00", b"\x01")


def argv_case(entry, args):
    return {"entry": entry, "argv": [binascii.hexlify(arg_bytes(a)).decode() for a in args]}


GUEST = netbed.GUESTS[0]  # vif1.0: protected in the bed, so a refused re-apply is seen
VIF = GUEST.port
BAD_VIF = st.one_of(
    inserted(VIF, breaking(ALNUM | {"."})),
    inserted("tap3.0", breaking(ALNUM | {"."})),
    st.sampled_from(["vif0.0", "vif01.0", "vif1.00", "vif32753.0", "vif1.10000", "vif1",
                     "eth0", "vif-1.0", "vif1.0.0", "VIF1.0", "vif\u0661.0", "vif\uff11.0"]),
    st.text(ANY_CHAR, max_size=12).filter(lambda t: not t.startswith("-")))
HOSTILE_TEXT = st.text(ANY_CHAR, max_size=12)


def hook_arguments():
    action = st.sampled_from(["online", "add", "offline", "remove"])
    bad_action = HOSTILE_TEXT.filter(
        lambda t: t not in ("online", "add", "offline", "remove") and not t.startswith("-"))
    positional = HOSTILE_TEXT.filter(lambda t: not t.startswith("-"))
    return st.one_of(
        st.tuples(action, BAD_VIF).map(list),
        st.tuples(bad_action, st.sampled_from([VIF, "vif2.0", "tap3.0"])).map(list),
        st.tuples(action, st.sampled_from([VIF, "vif77.0"]),
                  HOSTILE_TEXT.map(lambda t: "-" + t).filter(
                      lambda t: t != "--network" and not t.startswith("--network="))).map(list),
        st.lists(positional, max_size=1),
        st.tuples(action, st.just(VIF), positional, positional).map(list),
        st.tuples(st.sampled_from(["offline", "remove"]), st.just(VIF),
                  st.just("--network"), HOSTILE_TEXT).map(list),
        st.tuples(action, st.just(VIF), st.just("--network")).map(list),
    ).map(lambda args: argv_case("hook", args))


def nova_network(**changes):
    data = json.loads(GUEST.network())
    data.update(changes)
    return data


def _with(data, key, value):
    data = dict(data)
    data[key] = value
    return data


def bad_networks():
    """Nova's object for vif1.0 with one validated field broken, or not an
    object at all: every one is refused."""
    base = nova_network()
    mac = GUEST.mac
    address = {"ip": GUEST.ipv4[0], "netmask": "255.255.255.0", "enabled": "1"}
    address6 = {"ip": GUEST.ipv6[0], "netmask": "64", "enabled": "1"}
    known = set(["label", "mac", "ips", "ip6s", "gateway", "gateway_v6", "dns", "routes",
                 "broadcast", "mtu", "dhcp_server", "vm_id", "vif_uuid"])
    objects = st.one_of(
        st.tuples(HOSTILE_TEXT.filter(lambda k: k not in known), HOSTILE_TEXT).map(
            lambda kv: _with(base, kv[0], kv[1])),
        inserted(mac, breaking(set("0123456789abcdefABCDEF:"))).map(
            lambda m: _with(base, "mac", m)),
        st.sampled_from(["01:00:5e:00:00:01", "00:00:00:00:00:00", "02:00:00:00:00",
                         "02-00-00-00-00-01", "-2:00:00:00:00:01"]).map(
            lambda m: _with(base, "mac", m)),
        inserted(GUEST.ipv4[0], breaking(set(string.digits + "."))).map(
            lambda ip: _with(base, "ips", [dict(address, ip=ip)])),
        inserted(GUEST.ipv6[0], breaking(set(string.hexdigits + ":."))).map(
            lambda ip: _with(base, "ip6s", [dict(address6, ip=ip)])),
        st.sampled_from(["0.0.0.0", "127.0.0.1", "224.0.0.1", "1.2.3", "01.2.3.4",
                         "1.2.3.256", "-j", "1.2.3.4 "]).map(
            lambda ip: _with(base, "ips", [dict(address, ip=ip)])),
        st.tuples(HOSTILE_TEXT.filter(lambda k: k not in ("ip", "netmask", "enabled",
                                                          "gateway")), HOSTILE_TEXT).map(
            lambda kv: _with(base, "ips", [_with(address, kv[0], kv[1])])),
        st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(),
                  st.lists(st.integers(), max_size=3), HOSTILE_TEXT).map(
            lambda v: _with(base, "mac", v)),
        st.one_of(st.integers(), HOSTILE_TEXT, st.dictionaries(HOSTILE_TEXT, st.integers(),
                                                               max_size=2)).map(
            lambda v: _with(base, "ips", v)),
        st.just(dict((k, v) for k, v in base.items() if k != "mac")),
        st.one_of(st.lists(st.integers(), max_size=3), HOSTILE_TEXT, st.integers(),
                  st.none()),
    )
    return st.one_of(
        st.tuples(objects, st.booleans()).map(
            lambda t: json.dumps(t[0], ensure_ascii=t[1])),
        st.text(ANY_CHAR, max_size=16).filter(lambda t: not t.strip().startswith("{")),
        st.builds(lambda head, tail: head + tail,
                  st.just(GUEST.network()[:-1]),
                  st.sampled_from(["", ",", ', "mac": "02:00:00:00:00:01"}', "}}", "} x",
                                   ', "mac\\u0000": 1}', ', "\\ud800": 1}', ', "\\udfff\\ud800": 1}',
                                   ', "m\\u00e9": 1}'])),
        st.integers(1, 40).map(lambda n: "[" * n + "]" * n),
        st.integers(33, 60).map(lambda n: '{"mac": ' + "[" * n + "]" * n + "}"),
    )


def hook_networks():
    return st.tuples(st.sampled_from(["online", "add"]), bad_networks()).map(
        lambda t: argv_case("hook", [t[0], VIF, "--network", t[1]]))


# XML-RPC strings hold what XML can: no controls but tab, LF, CR; no lone surrogates.
XML_CHAR = chars_where(lambda c: (c >= " " or c in "\t\n\r") and
                      not "\ud800" <= c <= "\udfff" and c not in "\ufffe\uffff")
XML_TEXT = st.text(XML_CHAR, max_size=12)
XML_VALUES = st.one_of(XML_TEXT, st.integers(-2**31, 2**31 - 1), st.booleans(),
                       st.lists(XML_TEXT, max_size=2), st.dictionaries(
                           st.text(string.ascii_letters, max_size=5), XML_TEXT, max_size=2))

PLUGIN_SIGNATURES = {  # required, optional, and a refused value of each validated one
    "get_version": ((), ()),
    "sync": ((), ()),
    "setup_host": ((), ("trusted",)),
    "apply_vif": (("vif",), ("network",)),
    "teardown_vif": (("vif",), ()),
    "status": ((), ("vif",)),
}
VALID = {"vif": VIF, "network": GUEST.network(), "trusted": netbed.UPLINK_PORT}


def xml_safe(text):
    return all((c >= " " or c in "\t\n\r") and not "\ud800" <= c <= "\udfff" for c in text)


def bad_value(name):
    if name == "vif":
        return BAD_VIF.filter(xml_safe)
    if name == "network":
        return bad_networks().filter(xml_safe)
    return st.one_of(
        inserted("eth0", breaking(ALNUM | set("_.:,")).filter(xml_safe)),
        st.sampled_from(["vif1.0", "eth0 tap3.0", "-eth0", "eth0123456789abc", ".eth0"]))


def plugin_arguments(fn):
    required, optional = PLUGIN_SIGNATURES[fn]
    names = required + optional
    valid = dict((n, VALID[n]) for n in required)
    unknown = XML_TEXT.filter(lambda n: n not in names)
    choices = [
        st.tuples(unknown, XML_VALUES).map(lambda kv: _with(valid, kv[0], kv[1])),
        st.dictionaries(unknown, XML_VALUES, min_size=1, max_size=3).map(
            lambda d: {**valid, **d}),
    ]
    for name in names:
        choices.append(bad_value(name).map(lambda v, n=name: _with(valid, n, v)))
        choices.append(XML_VALUES.filter(lambda v: not isinstance(v, str)).map(
            lambda v, n=name: _with(valid, n, v)))
    for name in required:
        choices.append(st.just(dict((n, v) for n, v in valid.items() if n != name)))
        choices.append(st.just(_with(valid, name, "")))
    return st.one_of(choices).map(lambda args: {"entry": "plugin", "fn": fn, "args": args})


LINE_CHAR = chars_where(lambda c: c != "\n")  # a newline would make two lines


def seconds(text):
    """What the configuration takes as a number of seconds."""
    return bool(re.match(r"^(0|[1-9][0-9]{0,4})(\.[0-9]+)?$", text)) and float(text) > 0


def bad_config_line():
    """One line every reader refuses: it starts with a printable character
    and ends with one, so no strip() of any Python can make it empty."""
    keys = st.sampled_from(["IPTABLES", "EBTABLES", "LOCK_TIMEOUT", "STATE_DIR", "LOCK_FILE",
                            "TRUSTED_INTERFACES", "COMMAND_TIMEOUT"])
    return st.one_of(
        st.tuples(keys, st.text(LINE_CHAR, max_size=10),
                  chars_where(lambda c: not " " <= c <= "~" and c not in "\t\n"),
                  st.text(LINE_CHAR, max_size=10)).map(
            lambda t: "%s=x%s%s%sx" % t),
        st.text(string.ascii_uppercase + "_", min_size=1, max_size=10).filter(
            lambda k: k not in ("IPTABLES", "IP6TABLES", "EBTABLES", "ARPTABLES",
                                "TRUSTED_INTERFACES", "LOCK_FILE", "LOCK_TIMEOUT",
                                "COMMAND_TIMEOUT", "STATE_DIR", "PROC_SYS",
                                "XENSOURCE_NETWORK_CONF", "XENSOURCE_INVENTORY",
                                "XAPI_SOCKET", "SYS_CLASS_NET") and
            not k.endswith("_RESTORE") and not k.endswith("_SAVE") and k[0] != "_").map(
            lambda k: k + "=1"),
        st.text(string.ascii_letters + string.digits + " -.", min_size=1, max_size=10).filter(
            lambda t: t.strip() and t.strip()[0] != "#").map(lambda t: "x" + t),
        st.tuples(st.sampled_from(["LOCK_TIMEOUT", "COMMAND_TIMEOUT"]),
                  st.text(st.sampled_from("0123456789.eE+-_ xinfa"), min_size=1, max_size=8)
                  .filter(lambda v: not seconds(v.strip()))).map(
            lambda t: "%s=%s" % t),
        inserted("eth1", breaking(ALNUM | set("_.:,\"'")).filter(
            lambda c: " " <= c <= "~")).map(lambda t: "TRUSTED_INTERFACES=" + t),
        st.sampled_from(["TRUSTED_INTERFACES=vif1.0", "TRUSTED_INTERFACES=-eth0",
                         "IPTABLES=iptables;reboot", "IPTABLES=ip tables", 'LOCK_FILE="/x',
                         "STATE_DIR='/x", "export X", "=1", "lock_timeout=1"]),
    )


def config_files(bed_config):
    base = bed_config.splitlines()
    noise = st.lists(st.one_of(
        st.text(LINE_CHAR, max_size=12).map(lambda t: "#" + t),
        st.sampled_from(["", "   ", "\t"])), max_size=3)
    # The bad line last but for noise: a base line of the same key must not
    # come after it and put a good value back.
    return st.tuples(bad_config_line(), st.integers(0, len(base)), noise, noise,
                     st.booleans()).map(
        lambda t: {"entry": "config", "text": binascii.hexlify(
            ("\n".join(base[:t[1]] + t[2] + base[t[1]:] + [t[0]] + t[3]) +
             ("\r\n" if t[4] else "\n")).encode("utf-8", "surrogatepass")).decode()})


# ------------------------------------------------------------ the tests

def test_hook_arguments(drivers):
    run_cases(drivers, hook_arguments(), judge_hook)


def test_hook_network_json(drivers):
    run_cases(drivers, hook_networks(), judge_hook)


@pytest.mark.parametrize("fn", sorted(PLUGIN_SIGNATURES))
def test_plugin_function_arguments(drivers, fn):
    run_cases(drivers, plugin_arguments(fn), judge_plugin)


def test_configuration_files(drivers):
    with open(drivers.bed.conf) as handle:
        text = handle.read()
    run_cases(drivers, config_files(text), judge_config)
