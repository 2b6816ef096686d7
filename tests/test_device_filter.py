"""The device filter of a guest port on Open vSwitch (vifrules.devfilter):
what it renders and reads, and that the kernel drops LLC/SNAP frames with
it before the device's rx handler.

Why a Linux bridge here: on a XenServer host the kernel datapath takes a
VIF's frames in its rx handler, after the device's tc ingress, as the Linux
bridge does (both register with netdev_rx_handler_register). This machine
cannot load the openvswitch module, and on the userspace datapath of
tests/ovsbed.py Open vSwitch reads each port through an AF_PACKET socket,
which the kernel serves before tc ingress: there the filter cannot act
(tests/test_ovs_attacks.py keeps that attack a strict xfail). A bare Linux
bridge is the same hook point with a real rx handler and real frames."""

import os
import subprocess

import pytest

import attacks
import netbed
from vifrules import devfilter
from vifrules.addresses import VifName
from vifrules.ruleset import vif_mark

VIF1, VIF2, VIF3, TAP3 = [VifName(n) for n in ("vif1.0", "vif2.0", "vif3.0", "tap3.0")]
# 'tc -batch' listing the ingress filters of those four: vif1.0 has none,
# vif2.0 ours (handle: its number), vif3.0 someone else's at our pref,
# tap3.0 our program at another pref.
LISTING = """\
filter protocol all pref 9 bpf chain 0 
filter protocol all pref 9 bpf chain 0 handle 0x%x direct-action not_in_hw bytecode \
'4,40 0 0 12,53 1 0 1536,6 0 0 2,6 0 0 4294967295'
filter protocol all pref 9 u32 chain 0 
filter protocol all pref 9 u32 chain 0 fh 800: ht divisor 1 
filter protocol all pref 49 bpf chain 0 
filter protocol all pref 49 bpf chain 0 handle 0x%x direct-action not_in_hw bytecode \
'4,40 0 0 12,53 1 0 1536,6 0 0 2,6 0 0 4294967295'
""" % (devfilter.handle(VIF2), devfilter.handle(TAP3))


def test_the_program_file_holds_the_program_tc_lists_back():
    with open(devfilter.program_path()) as handle:
        text = handle.read()
    assert text.strip().rstrip(",") == devfilter.PROGRAM
    assert devfilter.program_path().startswith("/")
    count, ops = devfilter.PROGRAM.split(",", 1)
    assert int(count) == len(ops.split(","))


def test_each_device_gets_an_ingress_qdisc_then_the_filter():
    tap1 = VifName("tap1.0")
    lines, owners = devfilter.guard_lines([VIF1, tap1], "/p/llc-drop.bpf")
    assert lines == [
        "qdisc replace dev vif1.0 ingress",
        "filter replace dev vif1.0 parent ffff:fff2 pref 9 handle 0x%x protocol all bpf da "
        "bytecode-file /p/llc-drop.bpf" % vif_mark(VIF1),
        "qdisc replace dev tap1.0 ingress",
        "filter replace dev tap1.0 parent ffff:fff2 pref 9 handle 0x%x protocol all bpf da "
        "bytecode-file /p/llc-drop.bpf" % vif_mark(tap1)]
    assert owners == [None, "vif1.0", None, "tap1.0"]
    assert devfilter.removal_lines(["vif1.0"]) == ["filter del dev vif1.0 parent ffff:fff2 pref 9"]


def test_whose_filter_each_is_is_read_from_its_handle():
    assert devfilter.guarded([VIF1, VIF2, VIF3, TAP3], LISTING) == {
        "vif1.0": False, "vif2.0": True, "vif3.0": False, "tap3.0": False}
    assert devfilter.guarded([], "") == {}


def test_every_failing_batch_line_is_named():
    err = ('Error: Specified filter kind does not match existing one.\n'
           'We have an error talking to the kernel\nCommand failed -:2\n'
           'Cannot find device "vif9.0"\nCommand failed -:17\n')
    assert devfilter.failed_lines(err) == [2, 17]
    assert devfilter.failed_lines("RTNETLINK answers: Operation not permitted\n") == []


def _snap_and_plain():
    snap = [a for a in attacks.ATTACKS if a.name == "llc-snap"][0]
    marker = b"VRMARK-plain-ipv4-"
    plain = bytes(attacks._udp4(attacks.G1.mac, attacks.G1.ipv4[0], marker))
    return snap, plain, marker


def test_the_kernel_drops_snap_before_the_rx_handler(legacy_bed):
    """The frame the OpenFlow flows cannot tell from IPv4 (LLC/SNAP, the
    guest's own MAC and address) crosses a bare bridge; with the filter on
    the guest's device it reaches nothing, while plain IPv4 still does."""
    bed = legacy_bed
    snap, plain, marker = _snap_and_plain()
    frames = {"g1": [snap.frame, plain] * 3}
    points = ("up", "g2")
    bare = attacks.send_and_count(bed, frames, [snap.marker, marker], points)
    for point in points:
        assert bare[point][snap.marker] > 0 and bare[point][marker] > 0, bare
    vifs = [VifName(bed.guests[0].port)]
    lines = devfilter.guard_lines(vifs, devfilter.program_path())[0]
    bed.run("h", [devfilter.TC, "-batch", "-"], input="\n".join(lines) + "\n")
    assert bed.device_filters([vifs[0].name]) == {vifs[0].name: True}
    devices = [vifs[0].name]
    guarded = attacks.send_and_count(bed, frames, [snap.marker, marker], points)
    for point in points:
        assert guarded[point][snap.marker] == 0, "SNAP passed the device filter: %s" % guarded
        assert guarded[point][marker] > 0, "plain IPv4 no longer passes: %s" % guarded
    # the frames reached the device and the filter dropped them there
    stats = bed.run("h", [devfilter.TC, "-s", "qdisc", "show", "dev", devices[0]]).stdout
    assert "dropped 0," not in stats.split("ingress", 1)[1], stats
