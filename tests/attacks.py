"""The attacks of REFERENCE section 6 as frames, each with its own marker.

Each attack names the namespace that sends it and the observation points
('g2', 'up', 'h' = dom0's bridge device) where it arrives on an open bridge
and must not arrive on a protected one.
"""

import socket

from scapy.all import (ARP, BOOTP, Dot1AD, Dot1Q, Dot3, Ether, ICMPv6ND_NA,
                       ICMPv6ND_NS, ICMPv6ND_RA, ICMPv6ND_Redirect, ICMPv6NDOptDstLLAddr,
                       ICMPv6NDOptSrcLLAddr, IP,
                       IPv6, LLC, SNAP, UDP, Raw)

import netbed

BCAST = "ff:ff:ff:ff:ff:ff"
G1, G2, G3 = netbed.GUESTS
G1_LL = "fe80::ff:fe00:1"
G2_LL = "fe80::ff:fe00:2"
FOREIGN_IP = "198.51.100.77"
FOREIGN_IP6 = "2001:db8::99"
FOREIGN_MAC = "02:00:00:00:00:99"
ALL_POINTS = ("g2", "up", "h")


class Attack(object):
    """marker: bytes of the frame itself that tell it apart, for a frame a
    payload marker would change (a guard checks its length): none appended."""

    def __init__(self, name, sender, build, points=ALL_POINTS, marker=None):
        self.name = name
        self.sender = sender
        self.marker = marker or ("VRMARK-%s-" % name).encode()
        self.frame = bytes(build(Raw(marker is None and self.marker or b"")))
        assert self.marker in self.frame
        self.points = points


def _udp4(src_mac, src_ip, marker, dst_ip=netbed.UPLINK_IP):
    return Ether(src=src_mac, dst=BCAST) / IP(src=src_ip, dst=dst_ip) / \
        UDP(sport=9999, dport=9999) / marker


def _arp(op, hwsrc, psrc, pdst, marker, src=G1.mac):
    # The marker rides in the Ethernet padding of the short ARP frame.
    return Ether(src=src, dst=BCAST) / ARP(op=op, hwsrc=hwsrc, psrc=psrc, pdst=pdst) / marker


def _vlan_ip(marker, *tags):
    frame = Ether(src=G1.mac, dst=BCAST)
    for tag in tags:
        frame = frame / tag
    return frame / IP(src=G1.ipv4[0], dst=netbed.UPLINK_IP) / UDP(sport=9, dport=9) / marker


def neighbour_solicit_foreign_sll():
    """g1 asks for the uplink's address from its own, naming a foreign MAC
    as its link-layer address: the uplink then maps g1's address to it."""
    return Ether(src=G1.mac, dst="33:33:ff:00:00:fe") / \
        IPv6(src=G1.ipv6[0], dst="ff02::1:ff00:fe") / ICMPv6ND_NS(tgt=netbed.UPLINK_IP6) / \
        ICMPv6NDOptSrcLLAddr(lladdr=FOREIGN_MAC)


ATTACKS = [
    Attack("ipv4-source-foreign", "g1", lambda m: _udp4(G1.mac, FOREIGN_IP, m)),
    Attack("ipv4-source-other-guest", "g1", lambda m: _udp4(G1.mac, G2.ipv4[0], m)),
    Attack("ipv4-source-spoof-from-tap", "g3", lambda m: _udp4(G3.mac, FOREIGN_IP, m)),
    Attack("mac-spoof", "g1", lambda m: _udp4(FOREIGN_MAC, G1.ipv4[0], m)),
    Attack("arp-reply-other-guest-ip", "g1",
           lambda m: _arp(2, G1.mac, G2.ipv4[0], netbed.UPLINK_IP, m)),
    Attack("arp-request-other-guest-ip", "g1",
           lambda m: _arp(1, G1.mac, G2.ipv4[0], netbed.UPLINK_IP, m)),
    Attack("arp-sender-mac-differs", "g1",
           lambda m: _arp(2, FOREIGN_MAC, G1.ipv4[0], netbed.UPLINK_IP, m)),
    Attack("gratuitous-arp-foreign-ip", "g1",
           lambda m: _arp(1, G1.mac, netbed.UPLINK_IP, netbed.UPLINK_IP, m)),
    Attack("vlan-tagged", "g1", lambda m: _vlan_ip(m, Dot1Q(vlan=5))),
    Attack("vlan-0-priority-tag", "g1",
           lambda m: Ether(src=G1.mac, dst=BCAST) / Dot1Q(vlan=0) /
           IP(src=FOREIGN_IP, dst=netbed.UPLINK_IP) / UDP(sport=9, dport=9) / m),
    Attack("qinq-8021ad", "g1", lambda m: _vlan_ip(m, Dot1AD(vlan=5), Dot1Q(vlan=6))),
    Attack("qinq-double-8021q", "g1", lambda m: _vlan_ip(m, Dot1Q(vlan=5), Dot1Q(vlan=6))),
    Attack("llc-snap", "g1",
           lambda m: Dot3(src=G1.mac, dst=BCAST) / LLC(dsap=0xaa, ssap=0xaa, ctrl=3) /
           SNAP(OUI=0, code=0x0800) / IP(src=G1.ipv4[0], dst=netbed.UPLINK_IP) /
           UDP(sport=9, dport=9) / m),
    Attack("rarp", "g1",
           lambda m: Ether(src=G1.mac, dst=BCAST, type=0x8035) /
           ARP(op=3, hwsrc=G1.mac, psrc=G1.ipv4[0], hwdst=G1.mac) / m),
    Attack("ipv6-from-guest-without-ipv6", "g2",
           lambda m: Ether(src=G2.mac, dst=BCAST) / IPv6(src=G2_LL, dst="ff02::1") /
           UDP(sport=9, dport=9) / m, points=("up", "h")),
    Attack("ipv6-source-spoof", "g1",
           lambda m: Ether(src=G1.mac, dst=BCAST) /
           IPv6(src=FOREIGN_IP6, dst=netbed.UPLINK_IP6) / UDP(sport=9, dport=9) / m),
    Attack("router-advertisement", "g1",
           lambda m: Ether(src=G1.mac, dst=BCAST) / IPv6(src=G1_LL, dst="ff02::1") /
           ICMPv6ND_RA() / ICMPv6NDOptSrcLLAddr(lladdr=G1.mac) / m),
    # From the guest's own link-local address: only the rule against the
    # message kind stops them (found by ./build.sh mutants).
    Attack("icmpv6-redirect", "g1",
           lambda m: Ether(src=G1.mac, dst=BCAST) / IPv6(src=G1_LL, dst="ff02::1") /
           ICMPv6ND_Redirect(tgt=G1_LL, dst=netbed.UPLINK_IP6) / m),
    Attack("dhcpv6-server-reply", "g1",
           lambda m: Ether(src=G1.mac, dst=BCAST) / IPv6(src=G1_LL, dst="ff02::1") /
           UDP(sport=547, dport=546) / m),
    # Sent from the guest's own link-local address: only the check of the
    # target address stops it, in ip6tables, which dom0's sniffer on the
    # bridge device sees before: so it is watched at the uplink.
    # A payload marker would make it longer than an advertisement with one
    # option, which the link-layer guard drops whatever the target (the
    # mutant run found the target check untested): the marker is its flags,
    # target and option.
    Attack("neighbour-advert-foreign-target", "g1",
           lambda m: Ether(src=G1.mac, dst=BCAST) / IPv6(src=G1_LL, dst="ff02::1") /
           ICMPv6ND_NA(tgt=netbed.UPLINK_IP6, R=0, S=0, O=1) /
           ICMPv6NDOptDstLLAddr(lladdr=G1.mac) / m, points=("up",),
           marker=b"\x20\x00\x00\x00" + socket.inet_pton(socket.AF_INET6, netbed.UPLINK_IP6) +
           b"\x02\x01" + bytes.fromhex(G1.mac.replace(":", ""))),
    # From the guest's own address with its own MAC: only the link-layer
    # option lies, and it would poison the uplink's neighbour cache.
    Attack("neighbour-solicit-foreign-sll", "g1",
           lambda m: neighbour_solicit_foreign_sll() / m, points=("up",)),
    Attack("neighbour-advert-foreign-tll", "g1",
           lambda m: Ether(src=G1.mac, dst=BCAST) / IPv6(src=G1.ipv6[0], dst="ff02::1") /
           ICMPv6ND_NA(tgt=G1.ipv6[0], R=0, S=0, O=1) /
           ICMPv6NDOptDstLLAddr(lladdr=FOREIGN_MAC) / m, points=("up",)),
    # Two source link-layer options, the foreign one first: Linux keeps the
    # first it reads; a parser that calls the list invalid reads "no option".
    Attack("neighbour-solicit-two-sll", "g1",
           lambda m: neighbour_solicit_foreign_sll() / ICMPv6NDOptSrcLLAddr(lladdr=G1.mac) / m,
           points=("up",)),
    Attack("dhcp-server-reply", "g1",
           lambda m: Ether(src=G1.mac, dst=BCAST) / IP(src=G1.ipv4[0], dst="255.255.255.255") /
           UDP(sport=67, dport=68) / BOOTP(op=2, yiaddr="192.0.2.50") / m),
]


# Traffic for other guests that a guest must not see (the bridge floods
# unknown unicast once ageing is 0, and always floods broadcast).
def sniffing_frames():
    marker = Raw(b"VRMARK-unicast-for-g2")
    unicast = Ether(src=netbed.UPLINK_MAC, dst=G2.mac) / \
        IP(src=netbed.UPLINK_IP, dst=G2.ipv4[0]) / UDP(sport=9, dport=9) / marker
    arp_marker = Raw(b"VRMARK-arp-for-g2")
    arp = Ether(src=netbed.UPLINK_MAC, dst=BCAST) / \
        ARP(op=1, hwsrc=netbed.UPLINK_MAC, psrc=netbed.UPLINK_IP, pdst=G2.ipv4[0]) / arp_marker
    dom0_marker = Raw(b"VRMARK-dom0-arp-for-g2")
    dom0_arp = Ether(src=netbed.DOM0_MAC, dst=BCAST) / \
        ARP(op=1, hwsrc=netbed.DOM0_MAC, psrc=netbed.DOM0_IP, pdst=G2.ipv4[0]) / dom0_marker
    return [("up", bytes(unicast), bytes(marker)), ("up", bytes(arp), bytes(arp_marker)),
            ("h", bytes(dom0_arp), bytes(dom0_marker))]


# ------------------------------------------------------------ sending them
# (the bridge and the Open vSwitch suites send them alike)

def send_and_count(bed, frames_by_sender, markers, points, seconds=netbed.OBSERVE_SECONDS):
    """Send each sender's frames while sniffers at points count the markers."""
    sniffers = bed.observe(points, markers, seconds)
    try:
        for sender, frames in frames_by_sender.items():
            bed.send(sender, frames)
    except BaseException:
        sniffers.kill()
        raise
    return sniffers.counts()


def run_attacks(bed):
    by_sender = {}
    for attack in ATTACKS:
        by_sender.setdefault(attack.sender, []).append(attack.frame)
    return send_and_count(bed, by_sender, [a.marker for a in ATTACKS], ALL_POINTS)


def run_sniffing(bed, seconds=netbed.OBSERVE_SECONDS):
    """The sniffing frames, counted at g1 and g2 (the caller forces the flood)."""
    by_sender = {}
    markers = []
    for sender, frame, marker in sniffing_frames():
        by_sender.setdefault(sender, []).append(frame)
        markers.append(marker)
    return send_and_count(bed, by_sender, markers, ("g1", "g2"), seconds)
