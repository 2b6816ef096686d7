"""The pure parts of the core: parsing, rules as data, rendering, config."""

import json

import pytest

from vifrules import addresses, config, render, ruleset
from vifrules.errors import ConfigError, InvalidArgument


@pytest.mark.parametrize("name", ["vif1.0", "tap3.1", "vif32752.15", "vif12.0"])
def test_vif_names_accepted(name):
    assert addresses.VifName(name).name == name


@pytest.mark.parametrize("name", ["vif0.0", "vif01.0", "vif1.01", "vif1", "eth0", "vif1.0 ",
                                  "-vif1.0", "vif32753.0", "vif1.0;id", "tap1.a", "", "vif1.0\n"])
def test_vif_names_refused(name):
    with pytest.raises(InvalidArgument):
        addresses.VifName(name)


def test_ipv4_canonical_and_refused():
    assert addresses.parse_ipv4("192.0.2.1") == "192.0.2.1"
    for bad in ["300.1.1.1", "192.0.2", "192.0.2.01", "0.0.0.0", "127.0.0.1", "224.0.0.1",
                "255.255.255.255", "192.0.2.1/24", " 192.0.2.1", "-1.2.3.4"]:
        with pytest.raises(InvalidArgument):
            addresses.parse_ipv4(bad)


def test_ipv6_canonical_and_refused():
    assert addresses.parse_ipv6("2001:DB8:0:0:0:0:0:1") == "2001:db8::1"
    assert addresses.parse_ipv6("2001:db8::1:0:0:1") == "2001:db8::1:0:0:1"
    assert addresses.parse_ipv6("2001:db8:0:0:1::") == "2001:db8:0:0:1::"
    for bad in ["2001:db8::g", "2001:db8:::1", "1:2:3:4:5:6:7:8:9", "::", "::1", "ff02::1",
                "2001:db8::1::2", "12345::"]:
        with pytest.raises(InvalidArgument):
            addresses.parse_ipv6(bad)


def test_link_local_and_solicited_node():
    assert addresses.link_local_from_mac("52:54:00:12:34:56") == "fe80::5054:ff:fe12:3456"
    assert addresses.solicited_node("2001:db8::abcd:1234") == "ff02::1:ffcd:1234"


def test_parse_nic_keeps_enabled_addresses_only():
    nic = addresses.parse_nic(json.dumps({
        "label": "public", "mac": "40:40:FA:72:92:E4",
        "ips": [{"ip": "192.0.2.5", "netmask": "255.255.255.0", "enabled": "1"},
                {"ip": "192.0.2.6", "enabled": "0"}, {"ip": "192.0.2.5", "enabled": "1"}],
        "ip6s": [{"ip": "2001:DB8::5", "enabled": "1"}]}))
    assert nic.to_dict() == {"mac": "40:40:fa:72:92:e4", "ipv4": ["192.0.2.5"],
                             "ipv6": ["2001:db8::5"]}


@pytest.mark.parametrize("data", [
    "[]", "{", '{"ips": []}', '{"mac": "40:40:fa:72:92:e4", "extra": 1}',
    '{"mac": "40:40:fa:72:92:e4", "ips": {"ip": "192.0.2.1"}}',
    '{"mac": "40:40:fa:72:92:e4", "ips": [{"ip": "192.0.2.1", "enabled": "1", "x": 1}]}',
    '{"mac": "40:40:fa:72:92:e4", "ips": [{"enabled": "1"}]}',
    '{"mac": "40:40:fa:72:92:e4", "ips": [{"ip": 3232235521, "enabled": "1"}]}',
    '{"mac": "40:40:fa:72:92:e4", "ip6s": %s}' % json.dumps(
        [{"ip": "2001:db8::%x" % (i + 1), "enabled": "1"} for i in range(17)]),
])
def test_parse_nic_refuses(data):
    with pytest.raises(InvalidArgument):
        addresses.parse_nic(data)


def _vifs(names):
    return [addresses.VifName(n) for n in names]


def test_dispatch_keeps_every_chain_small_at_a_thousand_guests():
    vifs = _vifs(["vif%d.0" % d for d in range(1, 1001)] + ["tap%d.1" % d for d in range(1, 50)])
    chains = ruleset.dispatch_tree("ebtables", "nat", vifs)
    assert max(len(c.rules) for c in chains) <= 21 + 1
    names = [c.name for c in chains]
    assert len(names) == len(set(names))
    # every guest chain has an entry in its parent node, and one more in the
    # node of its own domid when that exists (vif1..vif100, tap1..tap4)
    targets = [r[-1] for c in chains for r in c.rules if r[-1].startswith("VRF-")]
    assert sorted(set(targets)) == sorted("VRF-%s" % v.name for v in vifs)
    assert len(targets) == len(vifs) + 100 + 4
    # the mark trie: one test per mark bit at most, each guest reached once
    chains = ruleset.dispatch_tree("iptables", "filter", vifs)
    assert max(len(c.rules) for c in chains) <= ruleset.MARK_BITS + 2
    targets = [r[-1] for c in chains for r in c.rules if r[-1].startswith("VRF-")]
    assert sorted(targets) == sorted("VRF-%s" % v.name for v in vifs)
    for port in ("vif999.0", "vif1.0", "tap49.1", "vif1000.0"):
        assert _walk(dict((c.name, c.rules) for c in chains), ruleset.MARK_ROOT, port) == \
            "VRF-" + port
    assert _walk(dict((c.name, c.rules) for c in chains), ruleset.MARK_ROOT, "vif1001.0") == "DROP"


def test_trie_path_is_rewritten_and_nodes_exist_for_proper_domid_prefixes():
    vif = addresses.VifName("vif123.0")
    others = _vifs(["vif1.0", "vif12.1"])
    write, delete = ruleset.dispatch_path("ebtables", "nat", vif, others)
    assert delete == ["VRFn-vif12", "VRFn-vif123", "VRTn-vif12", "VRTn-vif123"]
    node = [c for c in write if c.name == "VRFn-vif1"][0]
    assert node.rules == [("-i", "vif12.1", "-j", "VRF-vif12.1"),
                          ("-i", "vif1.0", "-j", "VRF-vif1.0"), ("-j", "DROP")]
    write, delete = ruleset.dispatch_path("ebtables", "nat", vif, others + [vif])
    assert delete == ["VRFn-vif123", "VRTn-vif123"]
    node = [c for c in write if c.name == "VRFn-vif12"][0]
    assert node.rules == [("-i", "vif123.0", "-j", "VRF-vif123.0"),
                          ("-i", "vif12.1", "-j", "VRF-vif12.1"), ("-j", "DROP")]


def test_guest_chains_are_deterministic_and_tokenised():
    nic = addresses.parse_nic('{"mac": "02:00:00:00:00:01", "ips": [{"ip": "192.0.2.11", '
                              '"enabled": "1"}], "ip6s": [{"ip": "2001:db8::11", "enabled": "1"}]}')
    vif = addresses.VifName("vif1.0")
    for family in ruleset.FAMILIES:
        for table in ruleset.TABLES[family]:
            first = ruleset.vif_chains(family, table, vif, nic)
            assert first == ruleset.vif_chains(family, table, vif, nic)
            for chain in first:
                assert chain.rules[-1] == ("-j", "DROP")
                for rule in chain.rules:
                    assert all(token and " " not in token for token in rule)


def test_no_ipv6_means_all_ipv6_dropped():
    nic = addresses.parse_nic('{"mac": "02:00:00:00:00:01", "ips": [{"ip": "192.0.2.11", '
                              '"enabled": "1"}]}')
    vif = addresses.VifName("vif1.0")
    for chain in ruleset.vif_chains("ip6tables", "filter", vif, nic):
        assert chain.rules == [("-j", "DROP")]
    eb = ruleset.vif_chains("ebtables", "nat", vif, nic)
    assert eb and [r for c in eb for r in c.rules if "IPv4" in r]
    # ebtables' guest chains end every frame: no ACCEPT can take an IPv6
    # frame (each names another protocol) and the chain ends in DROP.
    for chain in eb:
        assert chain.rules[-1] == ("-j", "DROP"), chain.name
        for rule in chain.rules[:-1]:
            if rule[-2:] == ("-j", "ACCEPT"):
                assert "-p" in rule and rule[rule.index("-p") + 1] in ("IPv4", "ARP"), rule


def test_restore_text_round_trips_through_parse_save():
    batch = render.Batch("iptables")
    batch.chains = ruleset.host_chains("iptables", "filter", ["eth1"])
    batch.policies = {"FORWARD": "DROP"}
    batch.insert_jumps = [("FORWARD", "VR-FORWARD")]
    text = render.restore_text([batch])
    assert text.startswith("*filter\n:FORWARD DROP [0:0]\n")
    assert "-I FORWARD 1 -j VR-FORWARD" in text and text.endswith("COMMIT\n")
    dump = "\n".join(line for line in text.replace("-I FORWARD 1", "-A FORWARD").split("\n")
                     if not line.startswith("-F "))
    saved = render.parse_save(dump)["filter"]
    assert ("FORWARD", "VR-FORWARD") in saved.jumps
    assert set(c.name for c in batch.chains) <= set(saved.chains)


def test_config_defaults_overrides_and_derived_tools(tmp_path, monkeypatch):
    path = tmp_path / "conf"
    path.write_text('# comment\nARPTABLES=arptables-legacy\nTRUSTED_INTERFACES="eth0, bond1"\n'
                    "export STATE_DIR='/tmp/x'\nIPTABLES_RESTORE=/opt/ipt-restore\n")
    monkeypatch.setenv("VIF_RULES_CONF", str(path))
    cfg = config.load()
    assert cfg.restore_tool("arptables") == "arptables-legacy-restore"
    assert cfg.restore_tool("iptables") == "/opt/ipt-restore"
    assert cfg.save_tool("ebtables") == "ebtables-save"
    assert cfg.trusted_interfaces == ["eth0", "bond1"]
    assert cfg.state_dir == "/tmp/x"
    assert cfg.lock_file == config.DEFAULTS["LOCK_FILE"]
    monkeypatch.delenv("VIF_RULES_CONF")
    assert config.config_path() == "/etc/sysconfig/vif-rules"


@pytest.mark.parametrize("text", ["NOPE=1\n", "IPTABLES=ipt; rm -rf /\n", "garbage\n",
                                  'TRUSTED_INTERFACES="vif1.0"\n', "IPTABLES=\"x\n"])
def test_config_refuses(tmp_path, text):
    path = tmp_path / "conf"
    path.write_text(text)
    with pytest.raises(ConfigError):
        config.load(str(path))


def test_dispatch_entries_per_family():
    """ebtables: one jump per entry (guest chains end every frame); iptables:
    mark bits with goto, the port checked last; ip6tables: jump + RETURN."""
    vifs = _vifs(["vif1.0", "vif12.0", "vif123.1"])
    node = [c for c in ruleset.dispatch_tree("ebtables", "nat", vifs) if c.name == "VRFn-vif1"][0]
    assert node.rules == [("-i", "vif12+", "-j", "VRFn-vif12"),
                          ("-i", "vif12.0", "-j", "VRF-vif12.0"),
                          ("-i", "vif1.0", "-j", "VRF-vif1.0"), ("-j", "DROP")]
    one = _vifs(["vif1.0"])  # mark 1 << 14: bit 15 of 30 from the top
    chains = dict((c.name, c.rules) for c in ruleset.dispatch_tree("iptables", "filter", one))
    assert chains == {
        ruleset.MARK_ROOT: [("-m", "mark", "--mark", "0x4000/0x4000", "-g", "VRFm-16-1"),
                            ("-j", "DROP")],
        "VRFm-16-1": [("-m", "physdev", "--physdev-in", "vif1.0", "-g", "VRF-vif1.0"),
                      ("-j", "DROP")]}
    chains = dict((c.name, c.rules) for c in ruleset.dispatch_tree("ip6tables", "filter", one))
    assert chains["VRFm-16-1"][:2] == [
        ("-m", "physdev", "--physdev-in", "vif1.0", "-j", "VRF-vif1.0"),
        ("-m", "physdev", "--physdev-in", "vif1.0", "-j", "RETURN")]
    assert ruleset.dispatch_tree("ebtables", "filter", vifs) == []


PORT_OPTIONS = ("-i", "-o", "--physdev-in", "--physdev-out")
DISPATCH_PREFIXES = ("VRFn-", "VRTn-", "VRFm-")


def _walk(chains, start, port):
    """Where a frame from/to port ends in the dispatch: a guest chain or DROP.
    A frame from a guest port carries the mark ebtables' 'from' chain sets."""
    mark = ruleset.vif_mark(addresses.VifName(port))
    chain, seen = start, 0
    while True:
        for rule in chains[chain]:
            pattern = [rule[i + 1] for i, token in enumerate(rule) if token in PORT_OPTIONS]
            if pattern and not (port == pattern[0] or (
                    pattern[0].endswith("+") and port.startswith(pattern[0][:-1]))):
                continue
            if "--mark" in rule:
                value, mask = [int(x, 16) for x in rule[rule.index("--mark") + 1].split("/")]
                if mark & mask != value:
                    continue
            target = rule[-1]
            if target in ("DROP", "RETURN"):
                return target
            if not target.startswith(DISPATCH_PREFIXES):
                return target  # a guest's own chain
            chain = target
            break
        else:
            raise AssertionError("fell off %s" % chain)
        seen += 1
        assert seen < 50


def _roots(family, direction):
    roots = [r for r in ruleset.host_chains(family, ruleset.GUEST_TABLE[family], [])
             if r.name in (ruleset.BASE_PREROUTING, ruleset.BASE_POSTROUTING,
                           ruleset.BASE_FORWARD)]
    match = direction == ruleset.FROM and ("-i", "--physdev-in") or ("-o", "--physdev-out")
    rules = [rule for root in roots for rule in root.rules
             if [t for t in rule if t in match] and rule[-1].startswith(DISPATCH_PREFIXES)]
    return rules + [("-j", "DROP")]


@pytest.mark.parametrize("family,table", [("iptables", "filter"), ("ip6tables", "filter"),
                                          ("ebtables", "nat")])
def test_adding_vifs_one_by_one_dispatches_as_the_rewritten_trie(family, table):
    """Events add VIFs by inserting rules only (no deletion, which costs an
    nf_tables commit a grace period) and tear down or replace by rewriting a
    path: in any order they end in exactly the full rewrite, where every port
    reaches its own chain and no other port gets anywhere."""
    import random
    rng = random.Random(7)
    universe = ["%s%d.%d" % (kind, domid, devid) for kind in ("vif", "tap")
                for domid in list(range(1, 130)) + [990, 999, 1000, 9999]
                for devid in (0, 1, 10)]
    for _ in range(60):
        chains = dict((c.name, list(c.rules)) for c in ruleset.dispatch_tree(family, table, []))
        members = []
        for _ in range(rng.randint(1, 40)):
            name = rng.choice(universe)
            vif = addresses.VifName(name)
            if name in [m.name for m in members]:
                # a replace or a teardown rewrites the path
                members = [m for m in members if m.name != name]
                if rng.random() < 0.5:
                    members.append(vif)
                write, delete = ruleset.dispatch_path(family, table, vif, members)
                for chain in write:
                    chains[chain.name] = list(chain.rules)
                for chain in delete:
                    chains.pop(chain, None)
                continue
            new_chains, inserts = ruleset.dispatch_insert(family, table, vif, members)
            for chain in new_chains:
                assert chain.name not in chains
                chains[chain.name] = list(chain.rules)
            for chain, position, rule in inserts:
                assert 1 <= position <= len(chains[chain]) + 1
                chains[chain].insert(position - 1, rule)
            members.append(vif)
        expected = dict((c.name, c.rules) for c in ruleset.dispatch_tree(family, table, members))
        assert chains == expected, sorted(m.name for m in members)  # whatever the order
        for direction in ruleset.directions(family, table):
            chains["root"] = _roots(family, direction)
            for port in universe:
                want = port in [m.name for m in members] and \
                    ruleset.vif_chain_name(direction, port) or "DROP"
                assert _walk(chains, "root", port) == want, (port, sorted(m.name for m in members))
                expected["root"] = chains["root"]
                assert _walk(expected, "root", port) == want


# The parsers check characters by hand (the re module costs a vif event more
# than the checks): they must accept exactly what these grammars accept.
GRAMMARS = {
    "vif": (r"(vif|tap)([1-9][0-9]{0,4})\.(0|[1-9][0-9]{0,3})\Z",
            lambda s: addresses.VifName(s) and int(s[3:].split(".")[0]) <= 32752),
    "iface": (r"[A-Za-z0-9_][A-Za-z0-9_.:]{0,14}\Z", addresses.parse_interface),
    "mac": (r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}\Z", addresses.parse_mac),
    "ipv4": (r"(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})){3}\Z", addresses.parse_ipv4),
}
ALPHABETS = {"vif": "vitapf0123456789.x\n -", "iface": "eth0_.:-/Aé\t",
             "mac": "0a:fF9g-\n", "ipv4": "0125.9 \n-a"}
SEEDS = {"vif": ["vif1.0", "tap32752.15", "vif10.0"], "iface": ["eth0", "bond0.100", "x"],
         "mac": ["02:00:00:00:00:01", "0a:FF:00:00:00:12"], "ipv4": ["192.0.2.1", "10.0.0.255"]}


def _mutants(seed, alphabet, rng):
    text = list(seed)
    for _ in range(rng.randint(0, 3)):
        where = rng.randint(0, len(text))
        choice = rng.random()
        if choice < 0.4 and text:
            text[min(where, len(text) - 1)] = rng.choice(alphabet)
        elif choice < 0.7:
            text.insert(where, rng.choice(alphabet))
        elif text:
            del text[min(where, len(text) - 1)]
    return "".join(text)


@pytest.mark.parametrize("kind", sorted(GRAMMARS))
def test_hand_written_checks_accept_exactly_the_grammar(kind):
    import random
    import re
    pattern, parse = GRAMMARS[kind]
    grammar = re.compile(pattern)
    rng = random.Random(4)
    checked = accepted = 0
    for _ in range(4000):
        text = _mutants(rng.choice(SEEDS[kind]), ALPHABETS[kind], rng)
        try:
            parse(text)
            ok = True
        except InvalidArgument:
            ok = False
        if kind == "ipv4" and grammar.match(text) and ok is False:
            continue  # refused for meaning (0/8, loopback, >255), not for form
        if kind == "mac" and grammar.match(text) and ok is False:
            assert int(text[:2], 16) & 1 or text == "00:00:00:00:00:00"
            continue
        if kind == "iface" and grammar.match(text) and ok is False:
            assert text[:3] in ("vif", "tap") or text.startswith("-")
            continue
        if kind == "vif" and grammar.match(text) and ok is False:
            assert int(grammar.match(text).group(2)) > 32752
            continue
        assert bool(grammar.match(text)) == ok, repr(text)
        checked += 1
        accepted += ok
    assert accepted > 50 and checked - accepted > 500  # both sides were exercised


@pytest.mark.parametrize("text", ["lower=1\n", "1ABC=2\n", "IPTABLES\n", "=x\n",
                                  "IPTABLES=ipt\u00e9\n"])
def test_config_refuses_malformed_lines(tmp_path, text):
    path = tmp_path / "conf"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError):
        config.load(str(path))


def test_members_per_family_come_from_the_state_directory(tmp_path):
    from vifrules.engine import Engine
    engine = Engine(config.Config({"STATE_DIR": str(tmp_path)}))
    state = engine.state
    v4 = addresses.parse_nic('{"mac": "02:00:00:00:00:01", "ips": [{"ip": "192.0.2.1", "enabled": "1"}]}')
    v6 = addresses.parse_nic('{"mac": "02:00:00:00:00:02", "ip6s": [{"ip": "2001:db8::2", "enabled": "1"}]}')
    state.write("vif1.0", v4)
    state.write("vif2.0", v4)
    vif2 = addresses.VifName("vif2.0")
    assert [v.name for v in engine._members("iptables", vif2)] == ["vif1.0"]
    assert engine._members("ip6tables", vif2) == []  # nobody has IPv6: empty, not everyone
    state.write("vif3.0", v6)
    vif1 = addresses.VifName("vif1.0")
    assert sorted(v.name for v in engine._members("ebtables", vif1)) == ["vif2.0", "vif3.0"]
    assert [v.name for v in engine._members("ip6tables", vif1)] == ["vif3.0"]


def test_parse_save_refuses_what_is_not_a_dump():
    assert render.parse_save("") == {}
    assert render.parse_save("# Generated\n*filter\n:FORWARD DROP [0:0]\nCOMMIT\n") is not None
    for garbage in ("Segmentation fault\n", "*filter\nhello world\nCOMMIT\n",
                    "-A FORWARD -j VR-FORWARD\n"):
        assert render.parse_save(garbage) is None, garbage


def test_sorting_vifs_never_compares_the_objects():
    vifs = _vifs(["vif2.0", "tap1.0", "vif10.1", "vif2.0", "vif10.0"])
    assert [v.name for v in ruleset.sorted_vifs(vifs)] == [
        "tap1.0", "vif2.0", "vif2.0", "vif10.0", "vif10.1"]
