#!/usr/bin/env python3
"""Render the product's own rules for one guest port, for the 32-bit VM.

    render_rules.py OUTDIR [--break]

Writes, with vifrules' public functions (the same assembly as the engine's
setup for a host with this one VIF on record):
  ebtables.restore    input of 'ebtables-restore --noflush' (filter and nat)
  arptables.commands  one arptables argument list a line, in order
  guest.env           the guest's and the uplink's names and addresses, for /init
--break removes one rule, the nat POSTROUTING hook's jump for guest ports
into their dispatch: the proof must then FAIL (frames for an address that is
not the guest's reach it).  (Removing a guest chain's final DROP would not let
a frame cross: the dispatch chain drops what the guest chain returns.)
"""
import argparse
import os
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(TOP, "xapi-plugin"))

from vifrules import ruleset  # noqa: E402
from vifrules.addresses import NicAddresses, VifName, parse_ipv4, parse_ipv6, parse_mac  # noqa: E402
from vifrules.render import Batch, restore_text  # noqa: E402

# One guest and one trusted uplink on one bridge; documentation addresses only.
VIF = "vif5.0"
GUEST_MAC = "02:00:00:00:05:00"
GUEST_IPV4 = "192.0.2.5"
GUEST_IPV6 = "2001:db8::5"
UPLINK = "eth0"
UPLINK_MAC = "02:00:00:00:01:00"
UPLINK_IPV4 = "192.0.2.1"
# what the guest tries to pass off as its own
FOREIGN_MAC = "02:00:00:00:66:66"
FOREIGN_IPV4 = "192.0.2.66"
VLAN_NET = ("198.51.100.5", "198.51.100.1", "7")


def ebtables_batches(vif, nic, trusted):
    batches = []
    for table in ruleset.TABLES["ebtables"]:
        batch = Batch("ebtables", table)
        batch.chains = ruleset.host_chains("ebtables", table, trusted)
        batch.chains.extend(ruleset.dispatch_tree("ebtables", table, [vif]))
        batch.chains.extend(ruleset.vif_chains("ebtables", table, vif, nic))
        batch.policies = ruleset.builtin_policies("ebtables", table)
        batch.insert_jumps = list(ruleset.builtin_hooks("ebtables", table))
        batches.append(batch)
    return batches


def arptables_lines(trusted):
    """What the engine runs for arptables on a host with no rules yet."""
    lines = [("-N", ruleset.BASE_FORWARD), ("-N", ruleset.PORTS_OUT)]
    lines.extend(ruleset.arptables_commands(trusted))
    lines.append(("-I", "FORWARD", "1", "-j", ruleset.BASE_FORWARD))
    for argv in lines:
        for token in argv:
            if not token or any(c.isspace() for c in token):
                raise ValueError("arptables token %r cannot be written one line a command" % token)
    return [" ".join(argv) for argv in lines]


def remove_rule(text, wanted):
    lines = text.split("\n")
    if lines.count(wanted) != 1:
        raise ValueError("expected one %r in the rendered rules, found %d" % (wanted, lines.count(wanted)))
    lines.remove(wanted)
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("outdir")
    p.add_argument("--break", dest="broken", action="store_true",
                   help="remove one rule: the jump that checks frames to guest ports")
    args = p.parse_args(argv)
    vif = VifName(VIF)
    nic = NicAddresses(parse_mac(GUEST_MAC), [parse_ipv4(GUEST_IPV4)], [parse_ipv6(GUEST_IPV6)])
    trusted = [UPLINK]
    text = restore_text(ebtables_batches(vif, nic, trusted))
    from_chain = ruleset.vif_chain_name(ruleset.FROM, vif.name)
    if args.broken:
        rule = ruleset.port_match("ebtables", ruleset.TO, "vif+") + \
            ("-j", ruleset.node_chain_name(ruleset.TO, "vif"))
        text = remove_rule(text, "-A %s %s" % (ruleset.BASE_POSTROUTING, " ".join(rule)))
    os.makedirs(args.outdir, exist_ok=True)
    with open(os.path.join(args.outdir, "ebtables.restore"), "w") as f:
        f.write(text)
    with open(os.path.join(args.outdir, "arptables.commands"), "w") as f:
        f.write("\n".join(arptables_lines(trusted)) + "\n")
    env = {
        "VIF": vif.name, "GUEST_MAC": nic.mac, "GUEST_IPV4": GUEST_IPV4,
        "UPLINK": UPLINK, "UPLINK_MAC": UPLINK_MAC, "UPLINK_IPV4": UPLINK_IPV4,
        "FOREIGN_MAC": FOREIGN_MAC, "FOREIGN_IPV4": FOREIGN_IPV4,
        "VLAN_GUEST_IPV4": VLAN_NET[0], "VLAN_UPLINK_IPV4": VLAN_NET[1], "VLAN_ID": VLAN_NET[2],
        "FROM_CHAIN": from_chain, "TO_CHAIN": ruleset.vif_chain_name(ruleset.TO, vif.name),
        "RULES_BROKEN": args.broken and "1" or "0",
    }
    with open(os.path.join(args.outdir, "guest.env"), "w") as f:
        for key in sorted(env):
            f.write("%s='%s'\n" % (key, env[key]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
