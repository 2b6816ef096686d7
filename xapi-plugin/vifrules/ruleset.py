"""Pure functions: from a guest's addresses (or the host's settings) to rules.

A rule is a tuple of argument tokens ending in '-j TARGET'; a Chain holds the
rules of one chain. Nothing here runs a command or touches a file.

Layout, per family (ebtables, iptables, ip6tables):
  built-in FORWARD (policy DROP) -> VR-FORWARD; INPUT -> VR-INPUT;
  OUTPUT -> VR-OUTPUT (ebtables only: bridged dom0 output is not visible to
  iptables' physdev-out).
  VR-FORWARD sends a frame from a guest port to the guest's 'from' check and a
  frame to a guest port to the guest's 'to' check; each returns if the frame is
  allowed and drops it otherwise. Then both ports must be guest or trusted ports.
  In ebtables' nat table, PREROUTING checks a guest's source MAC before the
  bridge learns it, so a guest cannot pull another guest's traffic to its
  port by sending with that guest's MAC.
  Dispatch to a guest's chain walks a trie over the digits of the domid
  (VRFn-vif -> VRFn-vif1 -> VRFn-vif12 -> VRF-vif12.0), so a frame passes about
  eleven rules per digit instead of one rule per guest on the host.
"""

from vifrules.addresses import ipv6_to_words, link_local_from_mac, solicited_node

FAMILIES = ("ebtables", "iptables", "ip6tables")
KINDS = ("vif", "tap")
FROM, TO, MAC_GUARD = "F", "T", "M"  # from the guest / to it / before learning
TABLES = {"ebtables": ("filter", "nat"), "iptables": ("filter",),
          "ip6tables": ("filter",)}
DIRECTIONS = {"filter": (FROM, TO), "nat": (MAC_GUARD,)}

BASE_FORWARD = "VR-FORWARD"
BASE_INPUT = "VR-INPUT"
BASE_OUTPUT = "VR-OUTPUT"
BASE_PREROUTING = "VR-PREROUTING"
PORTS_IN = "VR-PORTS-IN"
PORTS_OUT = "VR-PORTS-OUT"
CHAIN_PREFIX = "VR"  # every chain vif-rules owns starts with it

DHCP_SERVER_V4, DHCP_CLIENT_V4 = "67", "68"
DHCP_SERVER_V6 = "547"
ALL_NODES_V6 = "ff02::1"
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


class Chain(object):
    """One chain: its name, its policy (ebtables user chains have one) and rules."""

    def __init__(self, name, policy, rules):
        self.name = name
        self.policy = policy
        self.rules = [tuple(rule) for rule in rules]

    def __eq__(self, other):
        return (isinstance(other, Chain) and self.name == other.name and
                self.policy == other.policy and self.rules == other.rules)

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Chain(%r, %r, %r)" % (self.name, self.policy, self.rules)


def is_our_chain(name):
    return name.startswith(CHAIN_PREFIX) and name[len(CHAIN_PREFIX):][:1] in ("-", "F", "T", "M")


def vif_chain_name(direction, vif_name):
    return "VR%s-%s" % (direction, vif_name)


def node_chain_name(direction, prefix):
    return "VR%sn-%s" % (direction, prefix)


def port_match(family, direction, port):
    """Match the bridge port a frame comes in by (FROM) or goes out by (TO)."""
    if family == "ebtables":
        if direction in (FROM, MAC_GUARD):
            return ("-i", port)
        return ("-o", port)
    if direction in (FROM, MAC_GUARD):
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


def _ebtables_mac_guard(mac, nic):
    return [("-s", mac, "-j", "RETURN"), ("-j", "DROP")]


_VIF_RULES = {
    ("ebtables", FROM): _ebtables_from, ("ebtables", TO): _ebtables_to,
    ("ebtables", MAC_GUARD): _ebtables_mac_guard,
    ("iptables", FROM): _iptables_from, ("iptables", TO): _iptables_to,
    ("ip6tables", FROM): _ip6tables_from, ("ip6tables", TO): _ip6tables_to,
}


def vif_chains(family, table, vif, nic):
    """The chains of one guest port in one table: in filter, what it may send
    and what it may receive; in ebtables' nat, its source MAC."""
    return [Chain(vif_chain_name(direction, vif.name), "DROP",
                  _VIF_RULES[(family, direction)](nic.mac, nic))
            for direction in DIRECTIONS[table]]


def vif_chain_names(table, vif_name):
    return [vif_chain_name(direction, vif_name) for direction in DIRECTIONS[table]]


# ---------------------------------------------------------------- dispatch trie

def trie_path(vif):
    """The trie nodes from the root to the node holding vif: vif, vif1, vif12."""
    return [vif.kind + vif.domid[:i] for i in range(len(vif.domid) + 1)]


def _node_chain(family, direction, node, kind, digits, vifs):
    """One trie node. RETURN from a guest's chain means 'allowed', and lands
    back here, so each jump is followed by a RETURN with the same match; a
    port no guest chain claims falls through to DROP (fail closed)."""
    targets = []
    children = []
    for vif in vifs:
        if vif.kind != kind:
            continue
        if vif.domid == digits:
            targets.append((vif.name, vif_chain_name(direction, vif.name)))
        elif vif.domid.startswith(digits):
            child = node + vif.domid[len(digits)]
            if child not in children:
                children.append(child)
    children.sort()
    for child in children:
        targets.append((child + "+", node_chain_name(direction, child)))
    rules = []
    for port, chain in targets:
        match = port_match(family, direction, port)
        rules.append(match + ("-j", chain))
        rules.append(match + ("-j", "RETURN"))
    rules.append(("-j", "DROP"))
    return Chain(node_chain_name(direction, node), "DROP", rules), bool(targets)


def sorted_vifs(vifs):
    """By kind, then numerically by domid and devid: a stable order for rules."""
    keyed = [(v.kind, int(v.domid), int(v.devid), v) for v in vifs]
    keyed.sort()
    return [entry[3] for entry in keyed]


def dispatch_path(family, table, vif, vifs):
    """Trie nodes on vif's path, rewritten for the set vifs.

    Returns (chains to write, names of chains to delete): a node left with no
    guest beneath it is deleted, except the roots, which always exist.
    """
    vifs = sorted_vifs(vifs)
    write, delete = [], []
    for direction in DIRECTIONS[table]:
        for node in trie_path(vif):
            digits = node[len(vif.kind):]
            chain, used = _node_chain(family, direction, node, vif.kind, digits, vifs)
            if used or digits == "":
                write.append(chain)
            else:
                delete.append(chain.name)
    return write, delete


def dispatch_tree(family, table, vifs):
    """Every trie node for the set vifs, roots included."""
    vifs = sorted_vifs(vifs)
    nodes = []
    for kind in KINDS:
        nodes.append(kind)
    for vif in vifs:
        for node in trie_path(vif):
            if node not in nodes:
                nodes.append(node)
    chains = []
    for direction in DIRECTIONS[table]:
        for node in nodes:
            kind = node[:3]
            chains.append(_node_chain(family, direction, node, kind, node[3:], vifs)[0])
    return chains


# ---------------------------------------------------------------- the host

def builtin_hooks(family, table):
    """(built-in chain, our chain) pairs; the jump goes first in the built-in."""
    if table == "nat":
        return [("PREROUTING", BASE_PREROUTING)]
    hooks = [("FORWARD", BASE_FORWARD), ("INPUT", BASE_INPUT)]
    if family == "ebtables":
        hooks.append(("OUTPUT", BASE_OUTPUT))
    return hooks


def builtin_policies(family, table):
    if table == "nat":
        return {}
    return {"FORWARD": "DROP"}


def host_chains(family, table, trusted):
    """Our base chains for one family and table; trusted are the uplinks."""
    if table == "nat":
        return [Chain(BASE_PREROUTING, "RETURN",
                      [port_match(family, MAC_GUARD, kind + "+") +
                       ("-j", node_chain_name(MAC_GUARD, kind)) for kind in KINDS])]
    guest_ports = [kind + "+" for kind in KINDS]
    forward = []
    for direction in (FROM, TO):
        for kind in KINDS:
            forward.append(port_match(family, direction, kind + "+") +
                           ("-j", node_chain_name(direction, kind)))
    forward.append(("-j", PORTS_IN))
    forward.append(("-j", PORTS_OUT))
    forward.append(("-j", "ACCEPT"))
    ports = {}
    for direction in (FROM, TO):
        rules = [port_match(family, direction, port) + ("-j", "RETURN")
                 for port in guest_ports + list(trusted)]
        rules.append(("-j", "DROP"))
        ports[direction] = rules
    chains = [
        Chain(BASE_FORWARD, "RETURN", forward),
        Chain(PORTS_IN, "DROP", ports[FROM]),
        Chain(PORTS_OUT, "DROP", ports[TO]),
        Chain(BASE_INPUT, "RETURN",
              [port_match(family, FROM, kind + "+") + ("-j", node_chain_name(FROM, kind))
               for kind in KINDS]),
    ]
    if family == "ebtables":
        chains.append(Chain(BASE_OUTPUT, "RETURN",
                            [port_match(family, TO, kind + "+") +
                             ("-j", node_chain_name(TO, kind)) for kind in KINDS]))
    return chains


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
