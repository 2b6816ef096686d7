"""Ordinary traffic passes once every guest is protected, on both backends."""

import netbed


def test_kernel_arp_and_ping(bed):
    bed.protect_all()
    g1, g2, g3 = bed.guests
    assert bed.ping("g1", g2.ipv4[0]), "guest to guest"
    assert bed.ping("g1", netbed.UPLINK_IP), "guest to uplink"
    assert bed.ping("g1", netbed.DOM0_IP), "guest to dom0"
    assert bed.ping("up", g1.ipv4[0]), "uplink to guest"
    assert bed.ping("g3", g2.ipv4[0]), "HVM guest (tap) to guest"
    assert bed.ping("g1", netbed.UPLINK_IP6), "IPv6 guest to uplink, with NDP"


def test_udp_and_tcp(bed):
    bed.protect_all()
    g1, g2 = bed.guests[0], bed.guests[1]
    assert bed.echo_works("udp", "g1", "up", netbed.UPLINK_IP)
    assert bed.echo_works("tcp", "g1", "up", netbed.UPLINK_IP)
    assert bed.echo_works("tcp", "up", "g1", g1.ipv4[0])
    assert bed.echo_works("udp", "g2", "g1", g1.ipv4[0])
    assert bed.echo_works("tcp", "g1", "g2", g2.ipv4[0])
    assert bed.echo_works("tcp", "g1", "up", netbed.UPLINK_IP6)


def test_unprotected_vif_forwards_nothing(bed):
    """Host rules in force but no rules for a VIF: that guest is cut off."""
    bed.host_rules("start")
    g1 = bed.guests[0]
    bed.hook("online", g1.port, "--network", g1.network())
    assert bed.ping("g1", netbed.UPLINK_IP)
    assert not bed.ping("g2", netbed.UPLINK_IP, count=1)
    assert not bed.ping("g2", netbed.DOM0_IP, count=1)
    assert not bed.ping("g2", g1.ipv4[0], count=1)
