"""Pure functions: the filter the Open vSwitch backend puts on a guest's own
device besides its flows, as the lines 'tc -batch' reads, and the reading of
what tc lists. Nothing here runs a command.

Why a device filter: OVS reads an 802.2 LLC/SNAP frame with OUI 0 as the
ethertype it carries and keeps no trace of the framing (lib/flow.c,
parse_ethertype), so no flow tells SNAP-framed IPv4 from IPv4, and one with
the guest's own MAC and address would match its allows (only-own-ethertypes
would not hold). The kernel runs a device's ingress filters before its rx
handler, where the kernel datapath (like the Linux bridge) takes the frame
(net/core/dev.c, __netif_receive_skb_core). So on the guest's device every
frame whose type/length field is a length (below 0x0600: 802.2 LLC, SNAP,
raw 802.3) is dropped before the switch sees it; a guest needs none of them.
The program is classic BPF run as a direct action (it returns the verdict
itself, so no tc action module is needed): llc-drop.bpf beside this file,
'ldh [12]; jge #0x600 -> pass (TC_ACT_UNSPEC); else TC_ACT_SHOT'.
"""

import posix

from vifrules.ruleset import vif_mark

TC = "tc"
# Where an ingress qdisc and a clsact qdisc both take ingress filters.
PARENT = "ffff:fff2"
# Before Open vSwitch's own ingress policer (pref 49, a VIF's QoS), whose
# "conform" would end the classification before a later filter runs.
PREF = "9"
PROGRAM_FILE = "llc-drop.bpf"
PROGRAM = "4,40 0 0 12,53 1 0 1536,6 0 0 2,6 0 0 4294967295"  # as tc lists it


def program_path():
    """llc-drop.bpf beside this module, as an absolute path."""
    here = __file__
    if not here.startswith("/"):
        here = posix.getcwd() + "/" + here
    return here[:here.rfind("/") + 1] + PROGRAM_FILE


def handle(vif):
    """The filter's handle on vif's device: the VIF's number, so a listing
    of many devices says whose each one is (never 0, which would ask tc to
    choose: a guest's domid is at least 1)."""
    return vif_mark(vif)


def guard_lines(vifs, program):
    """The 'tc -batch' lines that put the filter on the device of each of
    vifs (VifName, in order): an ingress qdisc (replacing one keeps it and
    its filters), then the filter, replaced in place if it is there.
    Returns (lines, the VIF's name of each filter line, None for a qdisc
    line: a device with a clsact qdisc refuses the replace, and that qdisc
    takes the filter all the same; a device without either fails its filter)."""
    lines, owners = [], []
    for vif in vifs:
        lines.append("qdisc replace dev %s ingress" % vif.name)
        owners.append(None)
        lines.append("filter replace dev %s parent %s pref %s handle 0x%x protocol all "
                     "bpf da bytecode-file %s" % (vif.name, PARENT, PREF, handle(vif), program))
        owners.append(vif.name)
    return lines, owners


def removal_lines(devices):
    """The lines that take the filter off each of devices (the qdisc stays:
    it may hold others' filters)."""
    return ["filter del dev %s parent %s pref %s" % (d, PARENT, PREF) for d in devices]


def reading_lines(vifs):
    """The lines that list the ingress filters of each of vifs' devices."""
    return ["filter show dev %s parent %s" % (vif.name, PARENT) for vif in vifs]


def guarded(vifs, text):
    """The output of reading_lines(vifs) -> {name: True if our filter is on
    its device}. A filter is ours by its pref and program, and whose by its
    handle (tc does not repeat the device per filter)."""
    found = {}
    for line in text.splitlines():
        words = line.split()
        if ("pref %s " % PREF) in line and ("bytecode '%s'" % PROGRAM) in line \
                and "handle" in words[:-1]:
            found[words[words.index("handle") + 1]] = 1
    result = {}
    for vif in vifs:
        result[vif.name] = ("0x%x" % handle(vif)) in found
    return result


def failed_lines(err):
    """The 1-based lines 'tc -force -batch' names in 'Command failed -:N'."""
    marker = "Command failed -:"
    numbers = []
    for part in err.split(marker)[1:]:
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits = digits + char
        if digits:
            numbers.append(int(digits))
    return numbers
