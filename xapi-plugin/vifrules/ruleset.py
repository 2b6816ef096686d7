"""Pure functions: from a guest's addresses (or the host's settings) to rules.

A rule is a tuple of argument tokens ending in '-j TARGET'; a Chain holds the
rules of one chain. Nothing here runs a command or touches a file.

Layout:
  ebtables keeps each guest's checks in the nat table, as libvirt does:
  PREROUTING -> VR-PREROUTING sends a frame from a guest port to the guest's
  'from' chain before the bridge learns its source MAC (so no guest can pull
  another's traffic to its port); POSTROUTING -> VR-POSTROUTING sends a frame
  to a guest port, forwarded or from dom0, to the guest's 'to' chain. The
  filter table holds only the host's default DROP on FORWARD and the check
  that both ports are guest or trusted ports. So one event is one commit.
  iptables and ip6tables: FORWARD (policy DROP) -> VR-FORWARD sends a packet
  from a guest port to its 'from' chain, to a guest port to its 'to' chain,
  then checks both ports; INPUT -> VR-INPUT checks what guests send to dom0.
  A guest chain RETURNs what it allows and drops the rest.
  Dispatch to a guest's chain walks a trie over the digits of the domid
  (VRFn-vif -> VRFn-vif1 -> VRFn-vif12 -> VRF-vif12.0), so a frame passes a
  few rules per digit instead of one rule per guest on the host.
"""

from vifrules.addresses import ipv6_to_words, link_local_from_mac, solicited_node

FAMILIES = ("ebtables", "iptables", "ip6tables")
KINDS = ("vif", "tap")
FROM, TO = "F", "T"  # from the guest / to the guest
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

DHCP_SERVER_V4, DHCP_CLIENT_V4 = "67", "68"
DHCP_SERVER_V6 = "547"
ALL_NODES_V6 = "ff02::1"
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


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

def _ebtables_from(mac, nic):
    rules = []
    for ip in nic.ipv4:
        for op in ("Request", "Reply"):
            rules.append(("-p", "ARP", "-s", mac, "--arp-op", op,
                          "--arp-mac-src", mac, "--arp-ip-src", ip, "-j", "RETURN"))
    rules.append(("-p", "IPv4", "--ip-proto", "udp", "--ip-sport", DHCP_SERVER_V4,
                  "-j", "DROP"))
    for ip in nic.ipv4:
        rules.append(("-p", "IPv4", "-s", mac, "--ip-src", ip, "-j", "RETURN"))
    rules.append(("-p", "IPv4", "-s", mac, "--ip-src", "0.0.0.0",
                  "--ip-dst", "255.255.255.255", "--ip-proto", "udp",
                  "--ip-sport", DHCP_CLIENT_V4, "--ip-dport", DHCP_SERVER_V4,
                  "-j", "RETURN"))
    if nic.ipv6:
        for icmp_type in ("router-advertisement", "redirect"):
            rules.append(("-p", "IPv6", "--ip6-proto", "ipv6-icmp",
                          "--ip6-icmp-type", icmp_type, "-j", "DROP"))
        rules.append(("-p", "IPv6", "--ip6-proto", "udp", "--ip6-sport",
                      DHCP_SERVER_V6, "-j", "DROP"))
        for address in _own_ipv6(nic):
            rules.append(("-p", "IPv6", "-s", mac, "--ip6-src", address, "-j", "RETURN"))
        # Duplicate address detection and its MLD report come from '::'.
        for icmp_type in ("neighbour-solicitation", "143"):
            rules.append(("-p", "IPv6", "-s", mac, "--ip6-src", "::",
                          "--ip6-proto", "ipv6-icmp", "--ip6-icmp-type", icmp_type,
                          "-j", "RETURN"))
    rules.append(("-j", "DROP"))
    return rules


def _ebtables_to(mac, nic):
    rules = []
    for ip in nic.ipv4:
        rules.append(("-p", "ARP", "--arp-ip-dst", ip, "-j", "RETURN"))
    for ip in nic.ipv4:
        rules.append(("-p", "IPv4", "--ip-dst", ip, "-j", "RETURN"))
    for dest_mac in (mac, BROADCAST_MAC):
        rules.append(("-p", "IPv4", "-d", dest_mac, "--ip-proto", "udp",
                      "--ip-sport", DHCP_SERVER_V4, "--ip-dport", DHCP_CLIENT_V4,
                      "-j", "RETURN"))
    for address in _ipv6_destinations(nic):
        rules.append(("-p", "IPv6", "--ip6-dst", address, "-j", "RETURN"))
    rules.append(("-j", "DROP"))
    return rules


def _iptables_from(mac, nic):
    mac_match = ("-m", "mac", "--mac-source", mac)
    rules = [("-p", "udp", "--sport", DHCP_SERVER_V4, "-j", "DROP")]
    for ip in nic.ipv4:
        rules.append(("-s", ip + "/32") + mac_match + ("-j", "RETURN"))
    rules.append(("-s", "0.0.0.0/32", "-d", "255.255.255.255/32", "-p", "udp",
                  "--sport", DHCP_CLIENT_V4, "--dport", DHCP_SERVER_V4) +
                 mac_match + ("-j", "RETURN"))
    rules.append(("-j", "DROP"))
    return rules


def _iptables_to(mac, nic):
    rules = []
    for ip in nic.ipv4:
        rules.append(("-d", ip + "/32", "-j", "RETURN"))
    rules.append(("-p", "udp", "--sport", DHCP_SERVER_V4, "--dport", DHCP_CLIENT_V4,
                  "-j", "RETURN"))
    rules.append(("-j", "DROP"))
    return rules


def _ip6tables_from(mac, nic):
    rules = []
    if nic.ipv6:
        mac_match = ("-m", "mac", "--mac-source", mac)
        for icmp_type in ("134", "137"):  # router advertisement, redirect
            rules.append(("-p", "ipv6-icmp", "--icmpv6-type", icmp_type, "-j", "DROP"))
        rules.append(("-p", "udp", "--sport", DHCP_SERVER_V6, "-j", "DROP"))
        rules.append(_neighbour_advert_guard(_own_ipv6(nic)))
        for address in _own_ipv6(nic):
            rules.append(("-s", address + "/128") + mac_match + ("-j", "RETURN"))
        for icmp_type in ("135", "143"):  # DAD solicitation and its MLD report
            rules.append(("-s", "::/128", "-p", "ipv6-icmp", "--icmpv6-type", icmp_type)
                         + mac_match + ("-j", "RETURN"))
    rules.append(("-j", "DROP"))
    return rules


def _ip6tables_to(mac, nic):
    rules = []
    if nic.ipv6:
        for address in _ipv6_destinations(nic):
            rules.append(("-d", address + "/128", "-j", "RETURN"))
    rules.append(("-j", "DROP"))
    return rules


def _neighbour_advert_guard(addresses):
    """Drop a neighbour advertisement whose target is not one of the guest's.

    The target sits at byte 48 of an IPv6 packet without extension headers;
    one with extension headers does not match any own target and is dropped.
    """
    rule = ["-p", "ipv6-icmp", "--icmpv6-type", "136"]
    for address in addresses:
        rule.extend(["-m", "u32", "!", "--u32", _u32_ipv6_at(48, address)])
    rule.extend(["-j", "DROP"])
    return tuple(rule)


def _u32_ipv6_at(offset, address):
    words = ipv6_to_words(address)
    tests = []
    for i in range(4):
        value = (words[2 * i] << 16) | words[2 * i + 1]
        tests.append("0x%x=0x%x" % (offset + 4 * i, value))
    return "&&".join(tests)


def _own_ipv6(nic):
    """The guest's IPv6 sources: its link-local address from the MAC, then the rest."""
    link_local = link_local_from_mac(nic.mac)
    return [link_local] + [a for a in nic.ipv6 if a != link_local]


def _ipv6_destinations(nic):
    if not nic.ipv6:
        return []
    own = _own_ipv6(nic)
    result = list(own)
    for address in own:
        group = solicited_node(address)
        if group not in result:
            result.append(group)
    result.append(ALL_NODES_V6)
    return result


_VIF_RULES = {
    ("ebtables", FROM): _ebtables_from, ("ebtables", TO): _ebtables_to,
    ("iptables", FROM): _iptables_from, ("iptables", TO): _iptables_to,
    ("ip6tables", FROM): _ip6tables_from, ("ip6tables", TO): _ip6tables_to,
}


def wants_chains(family, nic):
    """ip6tables holds chains only for guests with IPv6: for the others a
    port with no chain already falls through to DROP."""
    return family != "ip6tables" or bool(nic.ipv6)


def directions(family, table):
    """The guest chains a table holds: from and to the guest, or none."""
    if GUEST_TABLE[family] == table:
        return (FROM, TO)
    return ()


def vif_chains(family, table, vif, nic):
    """The chains of one guest port in one table: what it may send and what
    it may receive."""
    return [Chain(vif_chain_name(direction, vif.name),
                  _VIF_RULES[(family, direction)](nic.mac, nic))
            for direction in directions(family, table)]


def vif_chain_names(family, table, vif_name):
    return [vif_chain_name(direction, vif_name) for direction in directions(family, table)]


# ---------------------------------------------------------------- dispatch trie

def trie_path(vif):
    """The trie nodes vif's entries live in, root first: vif, vif1, vif12
    (its own domid's node holds it too while that node exists)."""
    return [vif.kind + vif.domid[:i] for i in range(len(vif.domid) + 1)]


def sorted_vifs(vifs):
    """By kind, then numerically by domid and devid: a stable order for rules."""
    keyed = [(v.kind, int(v.domid), int(v.devid), v) for v in vifs]
    keyed.sort()
    return [entry[3] for entry in keyed]


class _Trie(object):
    """The dispatch trie of a set of VIFs. A node (kind + digits) exists for
    the roots and for every proper prefix of a member's domid; a VIF's exact
    entry sits in the node of its domid less one digit, and again first in
    the node of its whole domid while that node exists (the node's '+'
    entry comes before the exact entries, and catches the VIF's name too).

    So the trie of a set plus one VIF is the trie of the set plus some new
    nodes and entries: an event adds rules and never deletes one (deleting
    costs an nf_tables commit a kernel grace period), and still ends in
    exactly what a full rewrite writes.
    """

    def __init__(self, vifs):
        self.by_domid = {}
        self.node_set = {}
        for kind in KINDS:
            self.node_set[kind] = True
        for vif in sorted_vifs(vifs):
            self.by_domid.setdefault(vif.kind + vif.domid, []).append(vif)
            for i in range(1, len(vif.domid)):
                self.node_set[vif.kind + vif.domid[:i]] = True

    def exists(self, node):
        return node in self.node_set

    def nodes(self):
        result = list(self.node_set.keys())
        result.sort()
        return result

    def targets(self, direction, node):
        """(port pattern, chain) entries of a node, in order: VIFs of the
        node's own domid by devid, the child nodes by digit, then the VIFs
        of each child digit's domid."""
        def exact(domid_node):
            return [(v.name, vif_chain_name(direction, v.name))
                    for v in self.by_domid.get(domid_node, [])]
        targets = []
        if node not in KINDS:
            targets.extend(exact(node))
        for digit in "0123456789":
            if self.exists(node + digit):
                targets.append((node + digit + "+", node_chain_name(direction, node + digit)))
        for digit in "0123456789":
            targets.extend(exact(node + digit))
        return targets

    def chain(self, family, direction, node):
        """One node's chain; a port no entry claims falls through to DROP."""
        rules = []
        for port, chain in self.targets(direction, node):
            rules.extend(_entry_rules(family, direction, port, chain))
        rules.append(("-j", "DROP"))
        return Chain(node_chain_name(direction, node), rules)


def _entry_rules(family, direction, port, chain):
    """RETURN from a guest's chain means 'allowed' and lands back in the node,
    so the jump is followed by a RETURN with the same match; iptables uses a
    goto instead (ip6tables has -g only from 1.4.2)."""
    match = port_match(family, direction, port)
    if family == "iptables":
        return [match + ("-g", chain)]
    return [match + ("-j", chain), match + ("-j", "RETURN")]


def _rule_count(family, targets):
    """How many rules the entries take in a node (see _entry_rules)."""
    return len(targets) * ((family == "iptables" and 1) or 2)


def dispatch_path(family, table, vif, vifs):
    """Trie nodes on vif's path, rewritten for the set vifs.

    Returns (chains to write, names of chains to delete): the nodes that do
    not exist for vifs (a root always does).
    """
    trie = _Trie(vifs)
    write, delete = [], []
    for direction in directions(family, table):
        for node in trie_path(vif):
            if trie.exists(node):
                write.append(trie.chain(family, direction, node))
            else:
                delete.append(node_chain_name(direction, node))
    return write, delete


def dispatch_insert(family, table, vif, vifs):
    """How to add a VIF that has no entry yet by adding rules only.

    Returns (new node chains, inserts [(chain, position, rule)]): the nodes
    on vif's path that the set lacked, written whole, and one entry inserted
    into each node that exists already and gains one, where a full rewrite
    puts it.
    """
    before, after = _Trie(vifs), _Trie(list(vifs) + [vif])
    new_chains, inserts = [], []
    for direction in directions(family, table):
        for node in trie_path(vif):
            if not after.exists(node):
                continue
            if not before.exists(node):
                new_chains.append(after.chain(family, direction, node))
                continue
            old = before.targets(direction, node)
            new = after.targets(direction, node)
            if old == new:
                continue
            index = 0
            while index < len(old) and old[index] == new[index]:
                index += 1
            position = _rule_count(family, new[:index]) + 1
            port, target = new[index]
            chain = node_chain_name(direction, node)
            for offset, rule in enumerate(_entry_rules(family, direction, port, target)):
                inserts.append((chain, position + offset, rule))
    return new_chains, inserts


def dispatch_tree(family, table, vifs):
    """Every node of the trie for the set vifs, roots included."""
    trie = _Trie(vifs)
    return [trie.chain(family, direction, node)
            for direction in directions(family, table) for node in trie.nodes()]


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
    return [port_match(family, direction, kind + "+") + ("-j", node_chain_name(direction, kind))
            for kind in KINDS]


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
    forward = _dispatch_roots(family, FROM) + _dispatch_roots(family, TO) + checks
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
