"""Pure functions: from a guest's addresses (or the host's settings) to rules.

A rule is a tuple of argument tokens ending in '-j TARGET'; a Chain holds the
rules of one chain. Nothing here runs a command or touches a file.

Layout:
  ebtables keeps each guest's checks in the nat table, as libvirt does:
  PREROUTING -> VR-PREROUTING sends a frame from a guest port to the guest's
  'from' chain before the bridge learns its source MAC (so no guest can pull
  another's traffic to its port); POSTROUTING -> VR-POSTROUTING sends a frame
  to a guest port, forwarded or from dom0, to the guest's 'to' chain. A guest
  chain ACCEPTs what it allows (which ends that hook) and drops the rest. The
  filter table holds only the host's default DROP on FORWARD and the check
  that both ports are guest or trusted ports. So one event is one commit.
  The 'from' chain also marks the frame with the VIF's number (vif_mark).
  iptables and ip6tables check what a guest sends: FORWARD (policy DROP) and
  INPUT -> VR-FORWARD / VR-INPUT send a packet from a guest port to its
  'from' chain, which RETURNs what it allows; what reaches a guest is
  ebtables' 'to' chain's job alone (it sees dom0's own frames too).
  Dispatch to a guest's chain never walks one rule per guest on the host:
  ebtables walks a trie over the digits of the domid (VRFn-vif ->
  VRFn-vif1 -> VRFn-vif12 -> VRF-vif12.0); iptables walks the bits of the
  mark ebtables set (VRFm-...), one cheap mark test per bit at most, and
  checks the port where the walk ends.
"""

import bisect

from vifrules import policy
from vifrules.addresses import ipv6_to_words

FAMILIES = ("ebtables", "iptables", "ip6tables")
KINDS = ("vif", "tap")
FROM, TO = policy.FROM, policy.TO  # from the guest / to the guest
TABLES = {"ebtables": ("filter", "nat"), "iptables": ("filter",),
          "ip6tables": ("filter",)}
# The table that holds the guests' chains in each family.
GUEST_TABLE = {"ebtables": "nat", "iptables": "filter", "ip6tables": "filter"}

BASE_FORWARD = "VR-FORWARD"
BASE_INPUT = "VR-INPUT"
BASE_PREROUTING = "VR-PREROUTING"
BASE_POSTROUTING = "VR-POSTROUTING"
PORTS_IN = "VR-PORTS-IN"
PORTS_OUT = "VR-PORTS-OUT"
CHAIN_PREFIX = "VR"  # every chain vif-rules owns starts with it



class Chain(object):
    """One chain: its name and rules. Every chain states its own end (a final
    DROP, ACCEPT or nothing = RETURN), so no chain needs a policy: ebtables-nft
    turns a user chain's policy into a hidden rule it rewrites, and deletes."""

    def __init__(self, name, rules):
        self.name = name
        self.rules = [tuple(rule) for rule in rules]

    def __eq__(self, other):
        return isinstance(other, Chain) and self.name == other.name and \
            self.rules == other.rules

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Chain(%r, %r)" % (self.name, self.rules)


def is_our_chain(name):
    return name.startswith(CHAIN_PREFIX) and name[len(CHAIN_PREFIX):][:1] in ("-", "F", "T")


def vif_chain_name(direction, vif_name):
    return "VR%s-%s" % (direction, vif_name)


def node_chain_name(direction, prefix):
    return "VR%sn-%s" % (direction, prefix)


def port_match(family, direction, port):
    """Match the bridge port a frame comes in by (FROM) or goes out by (TO)."""
    if family == "ebtables":
        if direction == FROM:
            return ("-i", port)
        return ("-o", port)
    if direction == FROM:
        return ("-m", "physdev", "--physdev-in", port)
    return ("-m", "physdev", "--physdev-out", port)


# ---------------------------------------------------------------- one guest

def vif_mark(vif):
    """The VIF's number in the packet mark, unique on the host: 1 bit kind,
    15 bits domid, 14 bits devid."""
    return (KINDS.index(vif.kind) << 29) | (vif.domid_number << 14) | vif.devid_number


MARK_BITS = 30


# How each family writes a policy field: ebtables checks every frame at
# layer 2 (both directions); iptables and ip6tables check again what a guest
# sends, at layer 3, where ip6tables alone can look into neighbour discovery
# options (u32). A guard a family cannot write is left to the family that
# can (ebtables leaves the neighbour-discovery checks to ip6tables); an
# allow it cannot write would widen, and is refused.
ETHERTYPE = {"arp": "ARP", "ipv4": "IPv4", "ipv6": "IPv6"}
ARP_OP = {"1": "Request", "2": "Reply"}
ICMP6_NAME = {policy.ICMP6_ROUTER_ADVERT: "router-advertisement",
              policy.ICMP6_REDIRECT: "redirect",
              policy.ICMP6_NEIGHBOUR_SOLICIT: "neighbour-solicitation"}
IP_PROTO = {"udp": "udp", "icmp6": "ipv6-icmp"}
L3_FAMILY = {"iptables": "ipv4", "ip6tables": "ipv6"}

# Offsets in an IPv6 packet without extension headers (u32 counts from the
# IPv6 header): the payload length, the ND target, the first ND option.
ND_TARGET_AT, ND_OPTION_AT = 48, 64
ND_WITHOUT_OPTIONS, ND_WITH_ONE_OPTION = 24, 32
ND_OPTION_TYPE = {"nd_sll": 1, "nd_tll": 2}
ND_NONCE_OPTION = 14  # RFC 7527: Linux's duplicate address detection sends it


class Unwritable(Exception):
    """A field the family cannot check."""


def _ebtables_match(rule):
    fields = dict(rule)
    eth_type = fields.get("eth_type")
    ip = (eth_type == "ipv6" and "ip6") or "ip"
    tokens = []
    for name, value in rule:
        if name == "eth_type":
            tokens.extend(["-p", ETHERTYPE[value]])
        elif name == "eth_src":
            tokens.extend(["-s", value])
        elif name == "eth_dst":
            tokens.extend(["-d", value])
        elif name == "untagged":
            pass  # '-p' matches the outer ethertype: a tagged frame never matches
        elif name == "arp_op":
            tokens.extend(["--arp-op", ARP_OP[value]])
        elif name == "arp_sha":
            tokens.extend(["--arp-mac-src", value])
        elif name == "arp_spa":
            tokens.extend(["--arp-ip-src", value])
        elif name == "arp_tpa":
            tokens.extend(["--arp-ip-dst", value])
        elif name in ("ip4_src", "ip6_src"):
            tokens.extend(["--%s-src" % ip, value])
        elif name in ("ip4_dst", "ip6_dst"):
            tokens.extend(["--%s-dst" % ip, value])
        elif name == "ip_proto":
            tokens.extend(["--%s-proto" % ip, IP_PROTO[value]])
        elif name == "udp_src":
            tokens.extend(["--%s-sport" % ip, value])
        elif name == "udp_dst":
            tokens.extend(["--%s-dport" % ip, value])
        elif name == "icmp6_type":
            tokens.extend(["--ip6-icmp-type", ICMP6_NAME.get(value, value)])
        else:
            raise Unwritable(name)
    return tuple(tokens)


def _xtables_match(family, rule):
    fields = dict(rule)
    if fields.get("eth_type") != L3_FAMILY[family]:
        raise Unwritable("eth_type")
    host = (family == "iptables" and "/32") or "/128"
    tokens, tail = [], []
    for name, value in rule:
        if name in ("eth_type", "untagged"):
            pass  # the family is the ethertype; the bridge hands it untagged frames
        elif name == "eth_src":
            tail = ["-m", "mac", "--mac-source", value]
        elif name in ("ip4_src", "ip6_src"):
            tokens.extend(["-s", value + host])
        elif name in ("ip4_dst", "ip6_dst"):
            tokens.extend(["-d", value + host])
        elif name == "ip_proto":
            tokens.extend(["-p", IP_PROTO[value]])
        elif name == "udp_src":
            tokens.extend(["--sport", value])
        elif name == "udp_dst":
            tokens.extend(["--dport", value])
        elif name == "icmp6_type" and family == "ip6tables":
            tokens.extend(["--icmpv6-type", value])
        elif name in ("nd_target", "nd_sll", "nd_tll") and family == "ip6tables":
            tokens.extend(_u32_only(name, value, fields.get("icmp6_type")))
        else:
            raise Unwritable(name)
    return tuple(tokens + tail)


def _u32_only(name, value, icmp6_type):
    """A guard's Only(...) field as u32 tests that must all fail for the drop."""
    if not isinstance(value, policy.Only):
        raise Unwritable(name)
    tests = []
    for one in value.values:
        if name == "nd_target":
            tests.append(_u32_ipv6_at(ND_TARGET_AT, one))
        elif one == policy.NO_OPTION:
            tests.append("4>>16=%d" % ND_WITHOUT_OPTIONS)
            if icmp6_type == policy.ICMP6_NEIGHBOUR_SOLICIT:
                tests.append("4>>16=%d&&%d>>24=%d" % (ND_WITH_ONE_OPTION, ND_OPTION_AT,
                                                       ND_NONCE_OPTION))
        else:
            tests.append(_u32_link_layer_option(ND_OPTION_TYPE[name], one))
    tokens = []
    for test in tests:
        tokens.extend(["-m", "u32", "!", "--u32", test])
    return tokens


def _u32_link_layer_option(option_type, mac):
    """Exactly one option: a link-layer address option (length 1) with mac."""
    octets = [int(part, 16) for part in mac.split(":")]
    first = (option_type << 24) | (1 << 16) | (octets[0] << 8) | octets[1]
    rest = (octets[2] << 24) | (octets[3] << 16) | (octets[4] << 8) | octets[5]
    return "4>>16=%d&&%d=0x%x&&%d=0x%x" % (ND_WITH_ONE_OPTION, ND_OPTION_AT, first,
                                          ND_OPTION_AT + 4, rest)


def _u32_ipv6_at(offset, address):
    words = ipv6_to_words(address)
    tests = []
    for i in range(4):
        value = (words[2 * i] << 16) | words[2 * i + 1]
        tests.append("0x%x=0x%x" % (offset + 4 * i, value))
    return "&&".join(tests)


_MATCHES = {}  # (family, rule) -> tokens: most guards are the same for every guest
_MATCHES_LIMIT = 20000


def _family_match(family, rule):
    key = (family, rule)
    tokens = _MATCHES.get(key)
    if tokens is None:
        tokens = _rendered_match(family, rule)
        if len(_MATCHES) >= _MATCHES_LIMIT:
            _MATCHES.clear()
        _MATCHES[key] = tokens
    return tokens


def _rendered_match(family, rule):
    if family == "ebtables":
        return _ebtables_match(rule)
    return _xtables_match(family, rule)


def _guard_rules(family, rule):
    """One guard -> its DROP rules: one per Only(...) field (the frame is
    dropped if any one of them fails), or the plain drop."""
    only = [name for name, value in rule if isinstance(value, policy.Only)]
    if len(only) < 2:
        return [_family_match(family, rule) + ("-j", "DROP")]
    plain = [(n, v) for n, v in rule if not isinstance(v, policy.Only)]
    result = []
    for name in only:
        one = [(n, v) for n, v in rule if n == name or n in dict(plain)]
        result.append(_family_match(family, tuple(one)) + ("-j", "DROP"))
    return result


def policy_rules(family, direction, guest):
    """The rules of a guest's chain in one family, from its Policy: the
    guards the family can write, then every allow, then DROP."""
    accept = (family == "ebtables" and "ACCEPT") or "RETURN"
    rules = []
    for name, plain in guest.plain("guards", direction):
        try:
            rules.extend(_guard_rules(family, plain))
        except Unwritable:
            continue  # left to a family that can (see above)
    for name, plain in guest.plain("allows", direction):
        try:
            # Not kept in _MATCHES: an allow names the guest's own
            # addresses, so no other guest's chain has it.
            rules.append(_rendered_match(family, plain) + ("-j", accept))
        except Unwritable:
            if family == "ebtables" or dict(plain).get("eth_type") == L3_FAMILY[family]:
                raise ValueError("%s cannot check %s's %r" % (family, name, plain))
    rules.append(("-j", "DROP"))
    return rules


def _ebtables_mark(vif):
    return ("-j", "mark", "--mark-set", "0x%x" % vif_mark(vif), "--mark-target", "CONTINUE")


def _guest_chain_rules(family, direction, vif, guest):
    rules = policy_rules(family, direction, guest)
    if family == "ebtables" and direction == FROM:
        rules.insert(0, _ebtables_mark(vif))
    return rules


def wants_chains(family, nic):
    """ip6tables holds chains only for guests with IPv6: for the others a
    port with no chain already falls through to DROP."""
    return family != "ip6tables" or bool(nic.ipv6)


def directions(family, table):
    """The guest chains a table holds: from and to the guest (ebtables),
    from the guest (iptables, ip6tables), or none."""
    if GUEST_TABLE[family] != table:
        return ()
    if family == "ebtables":
        return (FROM, TO)
    return (FROM,)


_POLICIES = {}  # id(nic) -> (nic, its Policy): a rebuild asks once per family


def _policy_of(nic):
    known = _POLICIES.get(id(nic))
    if known is not None and known[0] is nic:
        return known[1]
    if len(_POLICIES) >= _MATCHES_LIMIT:
        _POLICIES.clear()
    guest = policy.guest_policy(nic)
    _POLICIES[id(nic)] = (nic, guest)
    return guest


def vif_chains(family, table, vif, nic):
    """The chains of one guest port in one table: what it may send and what
    it may receive."""
    wanted = directions(family, table)
    if not wanted:
        return []
    guest = _policy_of(nic)
    return [Chain(vif_chain_name(direction, vif.name),
                  _guest_chain_rules(family, direction, vif, guest))
            for direction in wanted]


def vif_chain_names(family, table, vif_name):
    return [vif_chain_name(direction, vif_name) for direction in directions(family, table)]


# ---------------------------------------------------------------- dispatch

def trie_path(vif):
    """The name trie's nodes vif's entries live in, root first: vif, vif1,
    vif12 (its own domid's node holds it too while that node exists)."""
    return [vif.kind + vif.domid[:i] for i in range(len(vif.domid) + 1)]


def sorted_vifs(vifs):
    """By kind, then numerically by domid and devid: a stable order for rules."""
    keyed = [(v.kind, v.domid_number, v.devid_number, i, v) for i, v in enumerate(vifs)]
    keyed.sort()  # the index keeps VifName objects themselves out of the comparison
    return [entry[4] for entry in keyed]


def _entry_rules(family, match, chain):
    """An entry of a dispatch chain: match -> chain. ebtables' guest chains
    end every frame (ACCEPT or DROP); iptables' RETURN what they allow, to
    the base chain that jumped into the dispatch, thanks to goto; ip6tables
    has -g only from 1.4.2, so there a RETURN with the same match follows."""
    if family == "ebtables":
        return [match + ("-j", chain)]
    if family == "iptables":
        return [match + ("-g", chain)]
    return [match + ("-j", chain), match + ("-j", "RETURN")]


class _NameTrie(object):
    """ebtables' dispatch: a trie over the digits of the domid. A node (kind +
    digits) exists for the roots and for every proper prefix of a member's
    domid; a VIF's exact entry sits in the node of its domid less one digit,
    and again in the node of its whole domid while that node exists (the
    node's '+' entry comes before the exact entries, and catches the VIF's
    name too).

    So the trie of a set plus one VIF is the trie of the set plus some new
    nodes and entries: an event adds rules and never deletes one (deleting
    costs an nf_tables commit a kernel grace period), and still ends in
    exactly what a full rewrite writes.
    """

    def __init__(self, family, direction, vifs):
        self.family = family
        self.direction = direction
        self.by_domid = {}
        self.node_set = {}
        for kind in KINDS:
            self.node_set[kind] = True
        by_domid, node_set = self.by_domid, self.node_set
        for vif in sorted_vifs(vifs):  # inline: an event builds this for every guest
            by_domid.setdefault(vif.kind + vif.domid, []).append(vif)
            for i in range(1, len(vif.domid)):
                node_set[vif.kind + vif.domid[:i]] = True

    def plus(self, vif):
        """The trie for the same set and vif."""
        other = _NameTrie(self.family, self.direction, [])
        other.node_set = dict(self.node_set)
        other.by_domid = dict(self.by_domid)  # the lists are shared, never changed
        key = vif.kind + vif.domid
        other.by_domid[key] = sorted_vifs(other.by_domid.get(key, []) + [vif])
        other._add_nodes(vif)
        return other

    def seen_from(self, direction):
        other = _NameTrie(self.family, direction, [])
        other.node_set, other.by_domid = self.node_set, self.by_domid
        return other

    def _add_nodes(self, vif):
        for i in range(1, len(vif.domid)):
            self.node_set[vif.kind + vif.domid[:i]] = True

    def path(self, vif):
        return [node_chain_name(self.direction, node) for node in trie_path(vif)]

    def names(self):
        result = [node_chain_name(self.direction, node) for node in self.node_set.keys()]
        result.sort()
        return result

    def has(self, name):
        return self._node(name) in self.node_set

    def _node(self, name):
        return name[len(node_chain_name(self.direction, "")):]

    def chain(self, name):
        """One node's chain: the child nodes by digit, the VIFs of each child
        digit's domid, then those of the node's own domid (the fewest frames
        come that way); a port no entry claims falls through to DROP."""
        node = self._node(name)
        targets = []
        for digit in "0123456789":
            if (node + digit) in self.node_set:
                targets.append((node + digit + "+", node_chain_name(self.direction, node + digit)))
        for digit in "0123456789":
            targets.extend(self._exact(node + digit))
        if node not in KINDS:
            targets.extend(self._exact(node))
        rules = []
        for port, target in targets:
            rules.extend(_entry_rules(self.family, port_match(self.family, self.direction, port),
                                      target))
        rules.append(("-j", "DROP"))
        return Chain(name, rules)

    def _exact(self, domid_node):
        return [(v.name, vif_chain_name(self.direction, v.name))
                for v in self.by_domid.get(domid_node, [])]


class _MarkTrie(object):
    """iptables' and ip6tables' dispatch: the bits of the mark ebtables' 'from'
    chain set (vif_mark), highest first. A chain per prefix that ends in a 1
    bit and has a member below (and the root) tests, for each lower bit
    whose 1-branch has members, 'that bit set -> its chain'; a packet that
    passes them all has only 0s left: the member whose mark ends there is
    checked by its port. So a packet passes at most one cheap test per mark
    bit, whatever the number of guests, and the port check at the end keeps
    a wrong or missing mark from reaching another guest's chain. Adding a
    member only adds chains and rules, like the name trie.
    """

    def __init__(self, family, vifs):
        self.family = family
        self.direction = FROM
        self.members = {}
        for vif in vifs:
            self.members[vif_mark(vif)] = vif
        self.marks = list(self.members.keys())
        self.marks.sort()

    def plus(self, vif):
        other = _MarkTrie(self.family, [])
        other.members = dict(self.members)
        other.marks = list(self.marks)
        mark = vif_mark(vif)
        other.members[mark] = vif
        bisect.insort(other.marks, mark)
        return other

    def seen_from(self, direction):
        return self

    def _populated(self, length, prefix):
        """Does a member's mark begin with these length bits?"""
        low = prefix << (MARK_BITS - length)
        index = bisect.bisect_left(self.marks, low)
        return index < len(self.marks) and \
            self.marks[index] < low + (1 << (MARK_BITS - length))

    def path(self, vif):
        return [_mark_chain_name(length, prefix)
                for length, prefix in [(0, 0)] + _one_prefixes(vif_mark(vif))]

    def names(self):
        keys = {(0, 0): True}
        for mark in self.marks:
            for key in _one_prefixes(mark):
                keys[key] = True
        keys = list(keys.keys())
        keys.sort()
        return [_mark_chain_name(length, prefix) for length, prefix in keys]

    def has(self, name):
        key = _mark_chain_key(name)
        return key == (0, 0) or (key is not None and self._populated(key[0], key[1]))

    def chain(self, name):
        length, prefix = _mark_chain_key(name)
        rules = []
        for bit in range(length, MARK_BITS):
            below = (prefix << (bit + 1 - length)) | 1
            if self._populated(bit + 1, below):
                mask = 1 << (MARK_BITS - 1 - bit)
                match = ("-m", "mark", "--mark", "0x%x/0x%x" % (mask, mask))
                rules.extend(_entry_rules(self.family, match,
                                          _mark_chain_name(bit + 1, below)))
        last = prefix << (MARK_BITS - length)
        if last in self.members:
            vif = self.members[last]
            rules.extend(_entry_rules(self.family, port_match(self.family, FROM, vif.name),
                                      vif_chain_name(FROM, vif.name)))
        rules.append(("-j", "DROP"))
        return Chain(name, rules)


def _one_prefixes(mark):
    """(length, value) of each prefix of mark's bits that ends in a 1."""
    result = []
    for bit in range(MARK_BITS):
        if mark & (1 << (MARK_BITS - 1 - bit)):
            result.append((bit + 1, mark >> (MARK_BITS - 1 - bit)))
    return result


MARK_ROOT = "VRFm-0-0"


def _mark_chain_name(length, prefix):
    return "VRFm-%d-%x" % (length, prefix)


def _mark_chain_key(name):
    try:
        length, prefix = name[len("VRFm-"):].split("-")
        return int(length), int(prefix, 16)
    except ValueError:
        return None


def _dispatch(family, direction, vifs):
    if family == "ebtables":
        return _NameTrie(family, direction, vifs)
    return _MarkTrie(family, vifs)


def _dispatches(family, table, vifs):
    """The dispatch of each direction the table holds, built once."""
    result = []
    for direction in directions(family, table):
        if result:
            result.append(result[0].seen_from(direction))
        else:
            result.append(_dispatch(family, direction, vifs))
    return result


def dispatch_path(family, table, vif, vifs):
    """Dispatch chains on vif's path, rewritten for the set vifs.

    Returns (chains to write, names of chains to delete): the chains that do
    not exist for vifs (a root always does).
    """
    write, delete = [], []
    for dispatch in _dispatches(family, table, vifs):
        for name in dispatch.path(vif):
            if dispatch.has(name):
                write.append(dispatch.chain(name))
            else:
                delete.append(name)
    return write, delete


def dispatch_insert(family, table, vif, vifs):
    """How to add a VIF that has no entry yet by adding rules only.

    Returns (new dispatch chains, inserts [(chain, position, rule)]): the
    chains on vif's path that the set lacked, written whole, and the rules a
    chain that exists gains, where a full rewrite puts them.
    """
    return dispatch_inserts(family, table, vifs, [vif])[0]


def dispatch_inserts(family, table, vifs, arriving):
    """dispatch_insert for each VIF of arriving in turn, the set growing
    with each: [(new dispatch chains, inserts)] in arriving's order. The
    tries are built once and grown (a boot storm's group commit)."""
    result = []
    current = _dispatches(family, table, vifs)
    for vif in arriving:
        new_chains, inserts, grown = [], [], []
        for before in current:
            after = before.plus(vif)
            grown.append(after)
            for name in after.path(vif):
                if not after.has(name):
                    continue
                if not before.has(name):
                    new_chains.append(after.chain(name))
                    continue
                old, new = before.chain(name).rules, after.chain(name).rules
                index = 0
                while index < len(old) and old[index] == new[index]:
                    index += 1
                added = len(new) - len(old)
                if new[:index] + new[index + added:] != old:
                    raise ValueError("dispatch chain %s does not only grow" % name)
                for offset in range(added):
                    inserts.append((name, index + offset + 1, new[index + offset]))
        current = grown
        result.append((new_chains, inserts))
    return result


def dispatch_tree(family, table, vifs):
    """Every dispatch chain for the set vifs, roots included."""
    result = []
    for dispatch in _dispatches(family, table, vifs):
        result.extend([dispatch.chain(name) for name in dispatch.names()])
    return result


# ---------------------------------------------------------------- the host

def builtin_hooks(family, table):
    """(built-in chain, our chain) pairs; the jump goes first in the built-in."""
    if family == "ebtables":
        if table == "nat":
            return [("PREROUTING", BASE_PREROUTING), ("POSTROUTING", BASE_POSTROUTING)]
        return [("FORWARD", BASE_FORWARD)]
    return [("FORWARD", BASE_FORWARD), ("INPUT", BASE_INPUT)]


def builtin_policies(family, table):
    if table == "nat":
        return {}
    return {"FORWARD": "DROP"}


def _dispatch_roots(family, direction):
    """Every frame of a guest port enters the dispatch (fail closed)."""
    if family == "ebtables":
        return [port_match(family, direction, kind + "+") +
                ("-j", node_chain_name(direction, kind)) for kind in KINDS]
    return [port_match(family, direction, kind + "+") + ("-j", MARK_ROOT) for kind in KINDS]


def _port_checks(family, trusted):
    """Both ports of a forwarded frame must be guest ports or trusted uplinks."""
    ports = [kind + "+" for kind in KINDS] + list(trusted)
    chains = []
    for direction, name in ((FROM, PORTS_IN), (TO, PORTS_OUT)):
        rules = [port_match(family, direction, port) + ("-j", "RETURN") for port in ports]
        rules.append(("-j", "DROP"))
        chains.append(Chain(name, rules))
    return chains


def host_chains(family, table, trusted):
    """Our base chains for one family and table; trusted are the uplinks."""
    checks = [("-j", PORTS_IN), ("-j", PORTS_OUT), ("-j", "ACCEPT")]
    if family == "ebtables":
        if table == "nat":
            return [Chain(BASE_PREROUTING, _dispatch_roots(family, FROM)),
                    Chain(BASE_POSTROUTING, _dispatch_roots(family, TO))]
        return [Chain(BASE_FORWARD, checks)] + _port_checks(family, trusted)
    forward = _dispatch_roots(family, FROM) + checks
    return [Chain(BASE_FORWARD, forward),
            Chain(BASE_INPUT, _dispatch_roots(family, FROM))] + \
        _port_checks(family, trusted)


def arptables_commands(trusted):
    """arptables has no incremental batch tool, so it holds only host-level rules:
    ARP is forwarded only between guest and trusted ports (per-guest ARP checks
    are in ebtables, which sees every bridged ARP frame first). Returns the
    argument lists that rebuild that layer, after the chains exist.
    """
    ports = [kind + "+" for kind in KINDS] + list(trusted)
    commands = [("-F", BASE_FORWARD), ("-F", PORTS_OUT)]
    for port in ports:
        commands.append(("-A", BASE_FORWARD, "-i", port, "-j", PORTS_OUT))
    for port in ports:
        commands.append(("-A", PORTS_OUT, "-o", port, "-j", "ACCEPT"))
    commands.append(("-P", "FORWARD", "DROP"))
    return commands


def host_sysctls():
    """The bridge must hand frames to iptables, arptables and ip6tables."""
    return ["net/bridge/bridge-nf-call-iptables",
            "net/bridge/bridge-nf-call-arptables",
            "net/bridge/bridge-nf-call-ip6tables"]
