"""Pure functions: a guest's Policy (policy.py) -> OpenFlow flows, as the text
'ovs-ofctl add-flows' reads. Port numbers come in as parameters; nothing here
runs a command.

The pipeline on a bridge (OpenFlow tables):
  0 INGRESS  a guest's port: its guards (drops, with their exceptions one
             priority above), then on to ALLOW; an uplink or the bridge's own
             port (LOCAL): on to DELIVER; any other port: dropped.
  1 ALLOW    a guest's allows (each untagged, from its port) go on to
             DELIVER; the rest of its port is dropped (its drop counter).
  2 DELIVER  where a frame goes, never by MAC learning: to a guest's MAC, to
             the guests whose ARP target, IPv6 multicast group or DHCP
             broadcast it is (each through EGRESS with reg0 = its port), and
             everything else, also after those, to OUTSIDE.
  3 EGRESS   reg0 = a guest's port: what the guest may receive goes out of
             it; the rest is dropped (its drop counter).
  4 OUTSIDE  to the uplink or LOCAL a frame's destination MAC was last seen
             coming in by (learnt from those ports only, never from a guest's),
             else out of every trusted uplink and LOCAL (never back in_port).

A guest's own flows (tables 0, 1, 3) carry its cookie, derived from its
VIF's number, so one VIF's flows can be replaced or removed by cookie alone;
DELIVER's flows depend on every guest of the bridge (two guests can share a
group or a MAC: the emulated and the PV NIC of one VM) and carry the shared
cookie; the pipeline's own flows the host cookie. Every cookie of ours
begins with COOKIE_PREFIX; flows with other cookies are not ours.
"""

from vifrules import policy
from vifrules.ruleset import vif_mark

INGRESS, ALLOW, DELIVER, EGRESS, OUTSIDE = 0, 1, 2, 3, 4

COOKIE_PREFIX = 0x5652 << 48  # 'VR'
COOKIE_MASK = 0xffff << 48
HOST_COOKIE = COOKIE_PREFIX | (1 << 32)
SHARED_COOKIE = COOKIE_PREFIX | (2 << 32)
LEARNT_COOKIE = COOKIE_PREFIX | (3 << 32)  # OUTSIDE's learnt MACs: ours, not the host's
LEARNT_PRIORITY, LEARNT_IDLE_SECONDS = 10, 300
VIF_COOKIE_BITS = 0xffffffff

# Above the flows XAPI's setup-vif-rules adds (up to 8000) and the bridge's
# default NORMAL flow (0): on a port of ours our flows decide.
GUARD_PRIORITY = 40000
PORT_PRIORITY = 30000  # a guest's closing flow; an uplink's or LOCAL's entry
CATCH_ALL_PRIORITY = 20000  # any other port, a guest's port without flows
UNICAST_PRIORITY, GROUP_PRIORITY = 300, 200

LOCAL = "LOCAL"
NO_OPTION_MAC = "00:00:00:00:00:00"  # how OVS reads an absent ND option
# OVS also reads an option list it finds invalid (a second source or target
# link-layer option) as "no option", and its target as "::". Linux believes
# the first option, so two source options, the first foreign, would poison
# a neighbour's cache. So a solicitation passes without its source option
# only from "::" (duplicate address detection, whose solicitations a
# receiver must discard if they carry the option: RFC 4861 7.1.1); from an
# address it must carry the guest's own MAC (RFC 4861 7.2.2: MUST for the
# multicast ones, SHOULD for unicast; Linux always does). An advertisement
# needs nothing more: an invalid list reads target "::", never the guest's
# own. No packet length is matched (check_pkt_larger is OVS 2.12 and up).
UNTAGGED = "vlan_tci=0x0000/0x1fff"  # no 802.1Q tag, VLAN 0 included

_PROTOCOL = {("arp", None): "arp", ("ipv4", None): "ip", ("ipv6", None): "ipv6",
             ("ipv4", "udp"): "udp", ("ipv6", "udp"): "udp6",
             ("ipv6", "icmp6"): "icmp6"}
_FIELD = {"eth_src": "dl_src", "eth_dst": "dl_dst", "arp_op": "arp_op",
          "arp_sha": "arp_sha", "arp_spa": "arp_spa", "arp_tpa": "arp_tpa",
          "ip4_src": "nw_src", "ip4_dst": "nw_dst", "ip6_src": "ipv6_src",
          "ip6_dst": "ipv6_dst", "udp_src": "tp_src", "udp_dst": "tp_dst",
          "icmp6_type": "icmp_type", "nd_target": "nd_target", "nd_sll": "nd_sll",
          "nd_tll": "nd_tll"}


def vif_cookie(vif):
    """The cookie of one VIF's flows: the prefix and the VIF's number."""
    return COOKIE_PREFIX | vif_mark(vif)


def cookie_text(cookie):
    return "0x%016x" % cookie


def vif_of_cookie(cookie):
    """The VIF's name of one of our per-VIF cookies, else None."""
    if cookie & COOKIE_MASK != COOKIE_PREFIX or cookie & ~COOKIE_MASK > VIF_COOKIE_BITS:
        return None
    number = cookie & 0x3fffffff
    if cookie & ~COOKIE_MASK != number:
        return None
    kind = ("vif", "tap")[number >> 29]
    return "%s%d.%d" % (kind, (number >> 14) & 0x7fff, number & 0x3fff)


def match_text(rule):
    """A plain policy match -> OpenFlow match fields, protocol first."""
    fields = dict(rule)
    words = [_PROTOCOL[(fields["eth_type"], fields.get("ip_proto"))]]
    for name, value in rule:
        if name in ("eth_type", "ip_proto"):
            continue
        if name == "untagged":
            words.append(UNTAGGED)
            continue
        if value == policy.NO_OPTION:
            value = NO_OPTION_MAC
        words.append("%s=%s" % (_FIELD[name], value))
    return ",".join(words)


def _flow(cookie, table, priority, match, actions):
    head = "table=%d,priority=%d,cookie=%s" % (table, priority, cookie_text(cookie))
    if match:
        head = head + "," + match
    return "%s actions=%s" % (head, actions)


def _exceptions(guard):
    """A guard with Only(...) fields -> (the guard without them, the plain
    matches of the frames it lets pass: every combination of allowed values)."""
    plain = tuple([(n, v) for n, v in guard if not isinstance(v, policy.Only)])
    passing = [()]
    for name, value in guard:
        if isinstance(value, policy.Only):
            passing = [done + ((name, one),) for done in passing for one in value.values]
    return plain, [plain + extra for extra in passing if extra]


def _exception_text(exception):
    """An exception's match; a solicitation without its source option only
    from "::" (see NO_OPTION_MAC)."""
    if dict(exception).get("nd_sll") == policy.NO_OPTION:
        exception = exception + (("ip6_src", policy.UNSPECIFIED_V6),)
    return match_text(exception)


def _port(ofport):
    return "in_port=%s" % ofport


def vif_flows(vif, guest, ofport):
    """The flows of one guest port (number ofport), its cookie on each: the
    guards and allows of what it sends, and the check of what it receives."""
    cookie = vif_cookie(vif)
    resubmit = "resubmit(,%d)"
    flows = []
    priority = GUARD_PRIORITY
    for name, guard in guest.guards(policy.FROM):
        for one in policy.expand(guard):
            plain, passing = _exceptions(one)
            for exception in passing:
                flows.append(_flow(cookie, INGRESS, priority + 1,
                                   _port(ofport) + "," + _exception_text(exception),
                                   resubmit % ALLOW))
            flows.append(_flow(cookie, INGRESS, priority,
                               _port(ofport) + "," + match_text(plain), "drop"))
            priority -= 2
    flows.append(_flow(cookie, INGRESS, PORT_PRIORITY, _port(ofport), resubmit % ALLOW))
    priority = GUARD_PRIORITY
    for name, allow in guest.allows(policy.FROM):
        for one in policy.expand(allow):
            flows.append(_flow(cookie, ALLOW, priority, _port(ofport) + "," + match_text(one),
                               resubmit % DELIVER))
            priority -= 1
    flows.append(_flow(cookie, ALLOW, PORT_PRIORITY, _port(ofport), "drop"))
    priority = GUARD_PRIORITY
    for name, allow in guest.allows(policy.TO):
        for one in policy.expand(allow):
            flows.append(_flow(cookie, EGRESS, priority,
                               "reg0=%s,%s" % (ofport, match_text(one)), "output:%s" % ofport))
            priority -= 1
    flows.append(_flow(cookie, EGRESS, PORT_PRIORITY, "reg0=%s" % ofport, "drop"))
    return flows


def delivery_keys(guest):
    """The DELIVER matches that lead to this guest: its MAC (unicast) and
    the broadcast or multicast its TO allows name."""
    keys = [(UNICAST_PRIORITY, "dl_dst=%s" % guest.nic.mac)]
    for name, allow in guest.allows(policy.TO):
        for one in policy.expand(allow):
            fields = dict(one)
            if fields["eth_type"] == "arp":
                keys.append((GROUP_PRIORITY, "arp,dl_dst=%s,arp_tpa=%s"
                             % (policy.BROADCAST_MAC, fields["arp_tpa"])))
            elif fields.get("ip6_dst", "").startswith("ff"):
                keys.append((GROUP_PRIORITY, "ipv6,ipv6_dst=%s" % fields["ip6_dst"]))
            elif fields.get("eth_dst") == policy.BROADCAST_MAC:
                keys.append((GROUP_PRIORITY, match_text(one)))
    return keys


def broadcast_keys(guest):
    """The delivery keys every guest has, whatever its addresses (the DHCP
    broadcast): those of a guest whose record need not be read."""
    return [key for key in delivery_keys(guest)[1:] if key[1].startswith("udp,")]


def _ports_by_key(entries, only=None):
    """{delivery key: sorted guest ports} of entries [(ofport, keys)];
    only: just these keys."""
    ports_of = {}
    for ofport, keys in entries:
        for key in keys:
            if only is not None and key not in only:
                continue
            ports = ports_of.setdefault(key, [])
            if ofport not in ports:
                ports.append(ofport)
    for ports in ports_of.values():
        ports.sort()
    return ports_of


def _delivery_flow(key, ports):
    priority, match = key
    actions = ["load:%s->NXM_NX_REG0[],resubmit(,%d)" % (p, EGRESS) for p in ports]
    if priority != UNICAST_PRIORITY:
        actions.append("resubmit(,%d)" % OUTSIDE)
    return _flow(SHARED_COOKIE, DELIVER, priority, match, ",".join(actions))


def shared_flows(members):
    """DELIVER's flows for the guests of one bridge: members is a list of
    (ofport, Policy). A broadcast or multicast goes on to OUTSIDE as well."""
    ports_of = _ports_by_key([(p, delivery_keys(g)) for p, g in members])
    keys = list(ports_of.keys())
    keys.sort()
    return [_delivery_flow(key, ports_of[key]) for key in keys]


def shared_changes(keys, entries):
    """Bundle lines that bring DELIVER's flows of these keys (those of a VIF
    before and after its change) in line with entries [(ofport, keys)]: an
    'add' replaces a flow of the same match, a key nobody has is deleted."""
    wanted = {}
    for key in keys:
        wanted[key] = 1
    ports_of = _ports_by_key(entries, wanted)
    keys = list(wanted.keys())
    keys.sort()
    lines = []
    for key in keys:
        if key in ports_of:
            lines.append("add " + _delivery_flow(key, ports_of[key]))
        else:
            lines.append("delete_strict cookie=%s/-1,table=%d,priority=%d,%s" % (
                cookie_text(SHARED_COOKIE), DELIVER, key[0], key[1]))
    return lines


def host_flows(trusted_ofports):
    """The pipeline itself: trusted uplinks and LOCAL enter DELIVER, any
    other port is dropped, whatever no flow delivers goes OUTSIDE."""
    entries = [LOCAL] + [str(p) for p in trusted_ofports]
    learn = ("learn(table=%d,priority=%d,idle_timeout=%d,cookie=%s,"
             "NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[])"
             % (OUTSIDE, LEARNT_PRIORITY, LEARNT_IDLE_SECONDS, cookie_text(LEARNT_COOKIE)))
    flows = [_flow(HOST_COOKIE, INGRESS, PORT_PRIORITY, _port(p),
                   "%s,resubmit(,%d)" % (learn, DELIVER)) for p in entries]
    flows.append(_flow(HOST_COOKIE, INGRESS, CATCH_ALL_PRIORITY, "", "drop"))
    flows.append(_flow(HOST_COOKIE, ALLOW, 0, "", "drop"))
    flows.append(_flow(HOST_COOKIE, DELIVER, 0, "", "resubmit(,%d)" % OUTSIDE))
    flows.append(_flow(HOST_COOKIE, EGRESS, 0, "", "drop"))
    outputs = ["output:%s" % p for p in entries[1:]] + ["output:%s" % LOCAL]
    flows.append(_flow(HOST_COOKIE, OUTSIDE, 0, "", ",".join(outputs)))
    return flows


# ---------------------------------------------------------------- bundles

def delete_line(cookie, mask=None, extra=""):
    if mask is None:
        mask_text = "-1"
    else:
        mask_text = cookie_text(mask)
    line = "delete cookie=%s/%s" % (cookie_text(cookie), mask_text)
    if extra:
        line = line + "," + extra
    return line


def vif_deletes(vif, ofport):
    """Bundle lines that remove a VIF's flows: by its cookie, and any flows of
    ours left on its port number by another VIF (a port number is given
    again to a new port); ofport None: its port is gone."""
    lines = [delete_line(vif_cookie(vif))]
    if ofport is not None:
        for table, match in ((INGRESS, _port(ofport)), (ALLOW, _port(ofport)),
                             (EGRESS, "reg0=%s" % ofport)):
            lines.append(delete_line(COOKIE_PREFIX, COOKIE_MASK, "table=%d,%s" % (table, match)))
    return lines


def change_bundle(deletes, host, shared_lines, flows):
    """The one transaction that changes some VIFs of a bridge: their old
    flows go (deletes: vif_deletes() of each), the host flows are rewritten,
    the delivery flows they touch brought in line (shared_lines:
    shared_changes()), their new flows come (none for a teardown)."""
    lines = deletes + [delete_line(HOST_COOKIE)]
    lines.extend(["add " + f for f in host])
    lines.extend(shared_lines)
    lines.extend(["add " + f for f in flows])
    return "\n".join(lines) + "\n"


def vif_bundle(vif, ofport, guest, host, shared_lines):
    """change_bundle() of one VIF (guest None: a teardown)."""
    flows = []
    if guest is not None:
        flows = vif_flows(vif, guest, ofport)
    return change_bundle(vif_deletes(vif, ofport), host, shared_lines, flows)


def bridge_bundle(host, shared, vif_flow_lists):
    """Every flow of ours on a bridge rewritten in one transaction."""
    lines = [delete_line(COOKIE_PREFIX, COOKIE_MASK)]
    lines.extend(["add " + f for f in host + shared])
    for flows in vif_flow_lists:
        lines.extend(["add " + f for f in flows])
    return "\n".join(lines) + "\n"
