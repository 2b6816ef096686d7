"""The protections of one guest NIC as backend-neutral data.

guest_policy(nic) -> a Policy: named filters, composed the way libvirt's
clean-traffic composes no-mac-spoofing, no-ip-spoofing and no-arp-spoofing.
Each filter holds

  guards  drops, checked first: what matches one is dropped, unless it also
          matches one of its exceptions (a field whose value is Only(...)
          must hold one of those values);
  allows  what passes, checked after every guard;

for one direction: FROM the guest (what it sends) or TO it (what it may
receive, forwarded, flooded or from dom0). Whatever no allow matches is
dropped. A match is a tuple of (field, value) pairs that must all hold; a
tuple value means any one of those values. Backends (ruleset.py for
netfilter, openflow.py for Open vSwitch) render the same filters; each states
which fields it checks in which stage. Nothing here runs a command.

Fields: eth_type (arp, ipv4, ipv6), eth_src, eth_dst, untagged (every frame
from the guest: no 802.1Q tag of any VLAN, 0 included), arp_op (1 request,
2 reply), arp_sha, arp_spa, arp_tpa, ip4_src, ip4_dst, ip6_src, ip6_dst,
ip_proto (udp, icmp6), udp_src, udp_dst, icmp6_type, nd_target, nd_sll,
nd_tll (NO_OPTION: the option is absent).
"""

from vifrules.addresses import link_local_from_mac, solicited_node

FROM, TO = "F", "T"  # the same letters as ruleset's chain names

DHCP_SERVER_V4, DHCP_CLIENT_V4 = "67", "68"
DHCP_SERVER_V6 = "547"
ALL_NODES_V6 = "ff02::1"
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
UNSPECIFIED_V4, LIMITED_BROADCAST_V4 = "0.0.0.0", "255.255.255.255"
UNSPECIFIED_V6 = "::"
NO_OPTION = "none"

ICMP6_ROUTER_ADVERT = "134"
ICMP6_NEIGHBOUR_SOLICIT = "135"
ICMP6_NEIGHBOUR_ADVERT = "136"
ICMP6_REDIRECT = "137"
ICMP6_MLD2_REPORT = "143"

# Field order: the order every backend writes its matches in.
FIELDS = ("eth_type", "eth_src", "eth_dst", "untagged", "arp_op", "arp_sha",
          "arp_spa", "arp_tpa", "ip4_src", "ip4_dst", "ip6_src", "ip6_dst",
          "ip_proto", "udp_src", "udp_dst", "icmp6_type", "nd_target", "nd_sll",
          "nd_tll")


class Only(object):
    """In a guard: the field must hold one of these values, or the frame is
    dropped (a frame that lacks the field altogether is not)."""

    def __init__(self, values):
        self.values = tuple(values)

    def __eq__(self, other):
        return isinstance(other, Only) and self.values == other.values

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(self.values)

    def __repr__(self):
        return "Only(%r)" % (self.values,)


def match(**fields):
    """A match: (field, value) pairs in FIELDS order."""
    for name in fields.keys():
        if name not in FIELDS:
            raise ValueError("unknown field %s" % name)
    return tuple([(name, fields[name]) for name in FIELDS if name in fields])


def expand(rule):
    """A match with tuple values -> the plain matches it stands for, the
    first field's values outermost (Only values are kept whole)."""
    for name, value in rule:
        if isinstance(value, tuple):
            break
    else:
        return [rule]  # nothing to expand: most rules
    result = [()]
    for name, value in rule:
        if isinstance(value, tuple):
            result = [done + ((name, one),) for done in result for one in value]
        else:
            result = [done + ((name, value),) for done in result]
    return result


class Filter(object):
    def __init__(self, name, direction, guards=(), allows=()):
        self.name = name
        self.direction = direction
        self.guards = list(guards)
        self.allows = list(allows)

    def __eq__(self, other):
        return isinstance(other, Filter) and (self.name, self.direction, self.guards,
                                              self.allows) == (other.name, other.direction,
                                                               other.guards, other.allows)

    def __ne__(self, other):
        return not self.__eq__(other)

    def __repr__(self):
        return "Filter(%r, %r, %r, %r)" % (self.name, self.direction, self.guards, self.allows)


class Policy(object):
    """One guest NIC's filters, in the order backends check them."""

    def __init__(self, nic, filters):
        self.nic = nic
        self.filters = list(filters)
        self._plain = {}

    def names(self):
        return [f.name for f in self.filters]

    def guards(self, direction):
        """[(filter name, match)] of one direction, in order."""
        return [(f.name, g) for f in self.filters if f.direction == direction
                for g in f.guards]

    def allows(self, direction):
        return [(f.name, a) for f in self.filters if f.direction == direction
                for a in f.allows]

    def plain(self, kind, direction):
        """[(filter name, plain match)] of guards(direction) or
        allows(direction) (kind: "guards" or "allows"), each expanded;
        kept, as each family renders the same ones."""
        key = (kind, direction)
        if key not in self._plain:
            self._plain[key] = [(name, one) for name, rule in getattr(self, kind)(direction)
                                for one in expand(rule)]
        return self._plain[key]

    def __eq__(self, other):
        return isinstance(other, Policy) and self.filters == other.filters

    def __ne__(self, other):
        return not self.__eq__(other)


# ---------------------------------------------------------------- addresses

def own_ipv6(nic):
    """The guest's IPv6 sources: its link-local address from the MAC, then the rest."""
    link_local = link_local_from_mac(nic.mac)
    return [link_local] + [a for a in nic.ipv6 if a != link_local]


def ipv6_destinations(nic):
    """What IPv6 may reach the guest: its addresses, their solicited-node
    groups, all-nodes; nothing without an IPv6 address."""
    if not nic.ipv6:
        return []
    own = own_ipv6(nic)
    result = list(own)
    for address in own:
        group = solicited_node(address)
        if group not in result:
            result.append(group)
    result.append(ALL_NODES_V6)
    return result


# ---------------------------------------------------------------- the filters
# Each takes the NIC and returns a Filter; guest_policy composes them.

def no_arp_spoofing(nic):
    """ARP requests and replies only with its own MAC and IP as sender."""
    return Filter("no-arp-spoofing", FROM, allows=[
        match(eth_type="arp", eth_src=nic.mac, untagged=True, arp_op=("1", "2"),
              arp_sha=nic.mac, arp_spa=ip) for ip in nic.ipv4])


def no_rogue_dhcp(nic):
    """No DHCP or DHCPv6 server replies from a guest."""
    guards = [match(eth_type="ipv4", ip_proto="udp", udp_src=DHCP_SERVER_V4)]
    if nic.ipv6:
        guards.append(match(eth_type="ipv6", ip_proto="udp", udp_src=DHCP_SERVER_V6))
    return Filter("no-rogue-dhcp", FROM, guards=guards)


def no_ra(nic):
    """No router advertisements or redirects from a guest."""
    guards = []
    if nic.ipv6:
        guards = [match(eth_type="ipv6", ip_proto="icmp6", icmp6_type=t)
                  for t in (ICMP6_ROUTER_ADVERT, ICMP6_REDIRECT)]
    return Filter("no-ra", FROM, guards=guards)


def no_nd_spoofing(nic):
    """Neighbour solicitations carry only its own MAC as source link-layer
    option; advertisements only its own addresses as target and its own MAC
    as target link-layer option. (The sources are no-ip-spoofing's.)"""
    if not nic.ipv6:
        return Filter("no-nd-spoofing", FROM)
    own_mac = (nic.mac, NO_OPTION)
    return Filter("no-nd-spoofing", FROM, guards=[
        match(eth_type="ipv6", ip_proto="icmp6", icmp6_type=ICMP6_NEIGHBOUR_SOLICIT,
              nd_sll=Only(own_mac)),
        match(eth_type="ipv6", ip_proto="icmp6", icmp6_type=ICMP6_NEIGHBOUR_ADVERT,
              nd_target=Only(own_ipv6(nic)), nd_tll=Only(own_mac)),
    ])


def no_ip_spoofing(nic):
    """IPv4 only from its addresses, IPv6 only from its addresses and its
    link-local address, each with its own MAC (which makes it also
    no-mac-spoofing's: a frame no allow matches is dropped)."""
    allows = [match(eth_type="ipv4", eth_src=nic.mac, untagged=True, ip4_src=ip)
              for ip in nic.ipv4]
    if nic.ipv6:
        allows.extend([match(eth_type="ipv6", eth_src=nic.mac, untagged=True, ip6_src=a)
                       for a in own_ipv6(nic)])
    return Filter("no-ip-spoofing", FROM, allows=allows)


def allow_dhcp_client(nic):
    """The DHCP client's discover and request, from 0.0.0.0."""
    return Filter("allow-dhcp-client", FROM, allows=[
        match(eth_type="ipv4", eth_src=nic.mac, untagged=True, ip4_src=UNSPECIFIED_V4,
              ip4_dst=LIMITED_BROADCAST_V4, ip_proto="udp", udp_src=DHCP_CLIENT_V4,
              udp_dst=DHCP_SERVER_V4)])


def allow_dad(nic):
    """'::' only for duplicate address detection and its MLD report."""
    if not nic.ipv6:
        return Filter("allow-dad", FROM)
    return Filter("allow-dad", FROM, allows=[
        match(eth_type="ipv6", eth_src=nic.mac, untagged=True, ip6_src=UNSPECIFIED_V6,
              ip_proto="icmp6", icmp6_type=t)
        for t in (ICMP6_NEIGHBOUR_SOLICIT, ICMP6_MLD2_REPORT)])


def no_mac_spoofing(nic):
    """Frames only from its MAC: every allow above names it; this filter
    holds no rule of its own (it is here so the composition is complete)."""
    return Filter("no-mac-spoofing", FROM)


def only_own_ethertypes(nic):
    """Every other ethertype (802.1Q and QinQ, LLC/SNAP, RARP, ...) and
    anything the allows leave out is dropped: the direction's closing drop."""
    return Filter("only-own-ethertypes", FROM)


def only_own_destinations(nic):
    """Toward the guest: ARP, IPv4 and IPv6 only for its addresses (so
    another guest's traffic flooded or broadcast never reaches it), the
    multicast neighbour discovery needs, DHCP replies to its MAC or
    broadcast; everything else dropped."""
    allows = [match(eth_type="arp", arp_tpa=ip) for ip in nic.ipv4]
    allows.extend([match(eth_type="ipv4", ip4_dst=ip) for ip in nic.ipv4])
    allows.append(match(eth_type="ipv4", eth_dst=(nic.mac, BROADCAST_MAC), ip_proto="udp",
                        udp_src=DHCP_SERVER_V4, udp_dst=DHCP_CLIENT_V4))
    allows.extend([match(eth_type="ipv6", ip6_dst=a) for a in ipv6_destinations(nic)])
    return Filter("only-own-destinations", TO, allows=allows)


COMPOSITION = (no_mac_spoofing, no_arp_spoofing, no_rogue_dhcp, no_ra, no_nd_spoofing,
               no_ip_spoofing, allow_dhcp_client, allow_dad, only_own_ethertypes,
               only_own_destinations)
FILTER_NAMES = ("no-mac-spoofing", "no-arp-spoofing", "no-rogue-dhcp", "no-ra",
                "no-nd-spoofing", "no-ip-spoofing", "allow-dhcp-client", "allow-dad",
                "only-own-ethertypes", "only-own-destinations")


def guest_policy(nic):
    """NicAddresses -> the guest's Policy (the 'clean-traffic' of vif-rules)."""
    return Policy(nic, [make(nic) for make in COMPOSITION])
