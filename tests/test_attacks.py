"""Every IPv4/ARP/L2/IPv6 attack is sent for real: it arrives on an open bridge
(so the check can fail) and does not arrive once vif-rules protects the host."""

import pytest

import attacks
import netbed


_send_and_count = attacks.send_and_count
_run_attacks = attacks.run_attacks


def _run_sniffing(bed):
    bed.ip("h", "link", "set", netbed.BRIDGE, "type", "bridge", "ageing_time", "0")
    return attacks.run_sniffing(bed)


@pytest.fixture(scope="module", params=["legacy", "nft"])
def results(request, tmp_path_factory):
    from conftest import bed_unavailable
    reason = bed_unavailable()
    if reason:
        pytest.skip(reason)
    with netbed.NetBed(str(tmp_path_factory.mktemp("attacks")), backend=request.param) as bed:
        bed.ip("h", "link", "set", netbed.BRIDGE, "type", "bridge", "ageing_time", "30000")
        open_attacks = _run_attacks(bed)
        open_sniffing = _run_sniffing(bed)
        bed.ip("h", "link", "set", netbed.BRIDGE, "type", "bridge", "ageing_time", "30000")
        bed.protect_all()
        protected_attacks = _run_attacks(bed)
        protected_sniffing = _run_sniffing(bed)
        yield {"open": open_attacks, "protected": protected_attacks,
               "open-sniff": open_sniffing, "protected-sniff": protected_sniffing}


@pytest.mark.parametrize("attack", attacks.ATTACKS, ids=[a.name for a in attacks.ATTACKS])
def test_attack_blocked(results, attack):
    for point in attack.points:
        assert results["open"][point][attack.marker] > 0, \
            "on an open bridge the frame should reach %s (is the test sound?)" % point
    for point in attack.points:
        assert results["protected"][point][attack.marker] == 0, \
            "%s reached %s through the protected bridge" % (attack.name, point)


@pytest.mark.parametrize("index", range(3), ids=["flooded-unicast", "arp-broadcast-from-uplink",
                                                 "arp-broadcast-from-dom0"])
def test_no_sniffing_of_other_guests(results, index):
    marker = attacks.sniffing_frames()[index][2]
    assert results["open-sniff"]["g1"][marker] > 0, "an open bridge floods it to g1"
    assert results["protected-sniff"]["g2"][marker] > 0, "the addressee still gets it"
    assert results["protected-sniff"]["g1"][marker] == 0, "g1 saw traffic for g2"


def test_mac_spoof_cannot_steal_another_guests_port(bed):
    """The bridge learns source MACs before the filter table: a frame carrying
    g2's MAC from g1 must be dropped before learning, or g2's traffic would be
    sent to g1's port."""
    bed.protect_all()
    g1, g2 = bed.guests[0], bed.guests[1]
    assert bed.ping("up", g2.ipv4[0])
    steal = attacks.Ether(src=g2.mac, dst=attacks.BCAST) / attacks.IP(
        src=g1.ipv4[0], dst=netbed.UPLINK_IP) / attacks.UDP(sport=9, dport=9)
    bed.send("g1", [bytes(steal)] * 3)
    fdb = bed.run("h", ["bridge", "fdb", "show", "br", netbed.BRIDGE]).stdout
    for line in fdb.splitlines():
        if line.startswith(g2.mac):
            assert "dev " + g2.port in line, "g2's MAC was learnt on another port: " + line
    assert bed.ping("up", g2.ipv4[0], count=1)


def test_iptables_checks_sources_on_its_own(bed):
    """iptables finds a guest's chain by the mark ebtables sets and checks the
    port where the walk ends. With a hole in ebtables (the guest's 'from'
    chain only marks and accepts), iptables alone still drops a spoofed
    source and passes the guest's own; a hole in both lets the spoof through
    (so the check can fail)."""
    bed.protect_all()
    g1 = bed.guests[0]
    tools = dict(netbed.BACKENDS[bed.backend])
    ebtables, iptables = "ebtables-nft", tools["IPTABLES"]
    chain = "VRF-" + g1.port
    mark = [r for r in bed.run("h", ["ebtables-nft-save", "-t", "nat"]).stdout.splitlines()
            if r.startswith("-A %s -j mark" % chain)]
    assert len(mark) == 1
    bed.run("h", [ebtables, "-t", "nat", "-F", chain])
    bed.run("h", [ebtables, "-t", "nat"] + mark[0].split())
    bed.run("h", [ebtables, "-t", "nat", "-A", chain, "-j", "ACCEPT"])
    spoof = bytes(attacks._udp4(g1.mac, attacks.FOREIGN_IP, b"VRMARK-alone-spoof-"))
    own = bytes(attacks._udp4(g1.mac, g1.ipv4[0], b"VRMARK-alone-own-"))
    markers = [b"VRMARK-alone-spoof-", b"VRMARK-alone-own-"]
    seen = _send_and_count(bed, {"g1": [spoof, own]}, markers, ("up",))["up"]
    assert seen[markers[1]] > 0, "the guest's own source must pass the mark dispatch"
    assert seen[markers[0]] == 0, "iptables let a spoofed source through"
    bed.run("h", [iptables, "-F", chain])  # now a hole in both
    seen = _send_and_count(bed, {"g1": [spoof, own]}, markers, ("up",))["up"]
    assert seen[markers[0]] > 0


def _uplink_neighbour(bed, address):
    return bed.run("up", ["ip", "-6", "neigh", "show", address, "dev", "eth0"]).stdout


def test_neighbour_cache_of_the_uplink_not_poisoned(bed):
    """A solicitation from g1's own address whose source link-layer option
    names a foreign MAC makes the uplink map g1's address to that MAC on an
    open bridge, and not once the host is protected."""
    g1 = bed.guests[0]
    frame = bytes(attacks.neighbour_solicit_foreign_sll())
    bed.send("g1", [frame])
    assert attacks.FOREIGN_MAC in _uplink_neighbour(bed, g1.ipv6[0]), \
        "on an open bridge the uplink learns the foreign MAC (is the test sound?)"
    bed.run("up", ["ip", "-6", "neigh", "flush", "dev", "eth0"])
    bed.protect_all()
    bed.send("g1", [frame] * 3)
    assert attacks.FOREIGN_MAC not in _uplink_neighbour(bed, g1.ipv6[0])
    assert bed.ping("g1", netbed.UPLINK_IP6), "g1's own neighbour discovery still works"
    assert g1.mac in _uplink_neighbour(bed, g1.ipv6[0])
