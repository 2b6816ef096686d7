"""Mutation run of the guest policy: does every rule have a test that needs it?

    ./build.sh mutants [--only N,M] [--list]        (root: network namespaces)

For the test guest g1 (vif1.0, IPv4 and IPv6) every rule ruleset.vif_chains
emits is dropped, one at a time: the bed is protected by the real hook and
host-rules with vif_chains wrapped to leave that rule out for vif1.0 (the
product code is not touched; the wrapper runs in the hook's own process,
see `hook` below). Then the attack suite runs against it, with each family
judged on its own: for a rule of ebtables the guest's iptables/ip6tables
chains are opened, for a rule of iptables/ip6tables its ebtables chains, so
a rule that another family backs up still has to be needed in its own.

A mutant is killed when an attack frame reaches a point it must not reach,
g1 sees another guest's traffic, or traffic g1 is entitled to (frames and
pings from tests/attacks.py LEGIT and below) no longer passes. Before the
mutants the same run without a mutation must pass every check, in both
modes, or the figures would mean nothing. Prints one line per mutant and
the number no check killed; exits 1 if there is one.
"""

import argparse
import json
import os
import signal
import sys
import tempfile
import time

TESTS = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)
sys.path.insert(0, os.path.join(TOP, "xapi-plugin"))

MUTANT_ENV = "VIF_RULES_MUTANT"
GUEST_PORT = "vif1.0"
SNIFF_SECONDS = 5
FAMILY_TABLES = (("ebtables", "nat"), ("ebtables", "filter"), ("iptables", "filter"),
                 ("ip6tables", "filter"))


# ------------------------------------------------------------ the mutation

def guest_rules():
    """[(family, table, chain, index, rule)] of every rule the policy emits
    for the test guest, in order."""
    import netbed
    from vifrules import addresses, ruleset
    guest = netbed.GUESTS[0]
    nic = addresses.parse_nic(guest.network())
    vif = addresses.VifName(guest.port)
    found = []
    for family, table in FAMILY_TABLES:
        for chain in ruleset.vif_chains(family, table, vif, nic):
            for index, rule in enumerate(chain.rules):
                found.append((family, table, chain.name, index, rule))
    return found


def wrap_vif_chains(mutant):
    """vif_chains without the mutant's rule for the test guest only."""
    from vifrules import ruleset
    family, table, chain_name, index = mutant
    real = ruleset.vif_chains

    def vif_chains(f, t, vif, nic):
        chains = real(f, t, vif, nic)
        if (f, t, vif.name) != (family, table, GUEST_PORT):
            return chains
        for chain in chains:
            if chain.name == chain_name:
                chain.rules = chain.rules[:index] + chain.rules[index + 1:]
        return chains
    ruleset.vif_chains = vif_chains


def hook(argv):
    """`mutants.py hook|host-rules ARGS`: the entry point, with the mutant of
    $VIF_RULES_MUTANT (family/table/chain/index) wrapped in."""
    mutant = os.environ.get(MUTANT_ENV)
    if mutant:
        family, table, chain, index = mutant.split("/")
        wrap_vif_chains((family, table, chain, int(index)))
    from vifrules import cli
    if argv[0] == "hook":
        return cli.hook_main(argv[1:])
    return cli.host_rules_main(argv[1:])


# ------------------------------------------------------------ the checks

def legit_frames():
    """Frames g1 may send or receive that no ping makes on its own:
    (name, sender, frame, marker, where it must arrive)."""
    import socket
    import attacks
    import netbed
    from scapy.all import (ARP, BOOTP, ICMPv6MLReport2, ICMPv6ND_NS, IP, IPv6, UDP,
                           Ether, Raw)
    g1 = netbed.GUESTS[0]
    g1_ll = attacks.G1_LL
    up_mac = netbed.UPLINK_MAC

    def marker(name):
        return ("VRLEGIT-%s." % name).encode()  # '.': no marker a prefix of another

    frames = []

    def add(name, sender, build, point):
        frames.append((name, sender, bytes(build(Raw(marker(name)))), marker(name), point))

    add("arp-request", "g1", lambda m: attacks._arp(1, g1.mac, g1.ipv4[0], netbed.UPLINK_IP, m), "up")
    add("arp-reply", "g1", lambda m: attacks._arp(2, g1.mac, g1.ipv4[0], netbed.UPLINK_IP, m), "up")
    add("ipv4-own", "g1", lambda m: attacks._udp4(g1.mac, g1.ipv4[0], m), "up")
    add("ipv6-own", "g1", lambda m: Ether(src=g1.mac, dst=attacks.BCAST) /
        IPv6(src=g1.ipv6[0], dst=netbed.UPLINK_IP6) / UDP(sport=9, dport=9) / m, "up")
    add("ipv6-own-link-local", "g1", lambda m: Ether(src=g1.mac, dst=attacks.BCAST) /
        IPv6(src=g1_ll, dst="ff02::1") / UDP(sport=9, dport=9) / m, "up")
    add("dhcp-discover", "g1", lambda m: Ether(src=g1.mac, dst=attacks.BCAST) /
        IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67) /
        BOOTP(op=1, chaddr=bytes.fromhex(g1.mac.replace(":", ""))) / m, "up")
    add("arp-for-g1", "up", lambda m: Ether(src=up_mac, dst=attacks.BCAST) /
        ARP(op=1, hwsrc=up_mac, psrc=netbed.UPLINK_IP, pdst=g1.ipv4[0]) / m, "g1")
    add("ipv4-to-g1", "up", lambda m: Ether(src=up_mac, dst=g1.mac) /
        IP(src=netbed.UPLINK_IP, dst=g1.ipv4[0]) / UDP(sport=9, dport=9) / m, "g1")
    add("dhcp-offer-unicast", "up", lambda m: Ether(src=up_mac, dst=g1.mac) /
        IP(src=netbed.UPLINK_IP, dst="255.255.255.255") / UDP(sport=67, dport=68) /
        BOOTP(op=2, yiaddr=g1.ipv4[0]) / m, "g1")
    add("dhcp-offer-broadcast", "up", lambda m: Ether(src=up_mac, dst=attacks.BCAST) /
        IP(src=netbed.UPLINK_IP, dst="255.255.255.255") / UDP(sport=67, dport=68) /
        BOOTP(op=2, yiaddr=g1.ipv4[0]) / m, "g1")
    for name, address, mac in (
            ("ipv6-to-g1", g1.ipv6[0], g1.mac), ("ipv6-to-g1-link-local", g1_ll, g1.mac),
            ("ipv6-all-nodes", "ff02::1", "33:33:00:00:00:01"),
            ("ipv6-solicited-node", "ff02::1:ff00:11", "33:33:ff:00:00:11"),
            ("ipv6-solicited-node-link-local", "ff02::1:ff00:1", "33:33:ff:00:00:01")):
        add(name, "up", lambda m, a=address, d=mac: Ether(src=up_mac, dst=d) /
            IPv6(src=netbed.UPLINK_IP6, dst=a) / UDP(sport=9, dport=9) / m, "g1")
    # Duplicate address detection and MLD come from '::' and carry no room for
    # a marker (the guard checks their length): their addresses are the marker.
    unspecified = socket.inet_pton(socket.AF_INET6, "::")
    dad = Ether(src=g1.mac, dst="33:33:ff:00:00:11") / \
        IPv6(src="::", dst="ff02::1:ff00:11") / ICMPv6ND_NS(tgt=g1.ipv6[0])
    frames.append(("dad-solicit", "g1", bytes(dad),
                   unspecified + socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:11"), "up"))
    mld = Ether(src=g1.mac, dst="33:33:00:00:00:16") / \
        IPv6(src="::", dst="ff02::16", hlim=1) / ICMPv6MLReport2()
    frames.append(("mld-report", "g1", bytes(mld),
                   unspecified + socket.inet_pton(socket.AF_INET6, "ff02::16"), "up"))
    return frames


def pings(bed):
    """Kernel traffic of g1 that needs ARP and neighbour discovery both ways."""
    import netbed
    g1 = bed.guests[0]
    up_ll = "fe80::ff:fe00:fe"
    return {
        "ping-uplink-to-g1": bed.ping("up", g1.ipv4[0]),
        "ping-g1-to-uplink": bed.ping("g1", netbed.UPLINK_IP),
        "ping6-uplink-to-g1": bed.ping("up", g1.ipv6[0]),
        "ping6-g1-to-uplink": bed.ping("g1", netbed.UPLINK_IP6),
        "ping6-uplink-to-g1-link-local": bed.ping("up", "fe80::ff:fe00:1%eth0"),
        "ping6-g1-to-uplink-link-local": bed.ping("g1", up_ll + "%eth0"),
    }


def open_other_families(bed, family):
    """Judge family alone: g1's chains of the other families let everything
    through (ebtables keeps the mark iptables/ip6tables dispatch on)."""
    import netbed
    tools = netbed.BACKENDS[bed.backend]
    if family == "ebtables":
        for tool in (tools["IPTABLES"], tools["IP6TABLES"]):
            bed.run("h", [tool, "-F", "VRF-" + GUEST_PORT])
            bed.run("h", [tool, "-A", "VRF-" + GUEST_PORT, "-j", "RETURN"])
        return
    save = bed.run("h", ["ebtables-nft-save", "-t", "nat"]).stdout.splitlines()
    mark = [r for r in save if r.startswith("-A VRF-%s -j mark" % GUEST_PORT)]
    for chain in ("VRF-", "VRT-"):
        bed.run("h", ["ebtables-nft", "-t", "nat", "-F", chain + GUEST_PORT])
    for rule in mark:
        bed.run("h", ["ebtables-nft", "-t", "nat"] + rule.split())
    for chain in ("VRF-", "VRT-"):
        bed.run("h", ["ebtables-nft", "-t", "nat", "-A", chain + GUEST_PORT, "-j", "ACCEPT"])


def run_checks(bed):
    """{check: True if it held} for the bed as it is."""
    import attacks
    import netbed
    held = {}
    frames = legit_frames()
    by_sender = {}
    for attack in attacks.ATTACKS:
        by_sender.setdefault(attack.sender, []).append(attack.frame)
    for name, sender, frame, marker, point in frames:
        by_sender.setdefault(sender, []).append(frame)
    markers = [a.marker for a in attacks.ATTACKS] + [f[3] for f in frames]
    # A longer watch than the attack tests': a loaded machine must not make
    # a legit frame late and a mutant look killed.
    seen = attacks.send_and_count(bed, by_sender, markers, attacks.ALL_POINTS + ("g1",),
                                  SNIFF_SECONDS)
    for attack in attacks.ATTACKS:
        for point in attack.points:
            held["attack %s@%s" % (attack.name, point)] = seen[point][attack.marker] == 0
    for name, sender, frame, marker, point in frames:
        held["legit " + name] = seen[point][marker] > 0
    bed.ip("h", "link", "set", netbed.BRIDGE, "type", "bridge", "ageing_time", "0")  # flood
    sniffed = attacks.run_sniffing(bed, SNIFF_SECONDS)
    for index, (sender, frame, marker) in enumerate(attacks.sniffing_frames()):
        held["no-sniffing %d" % index] = sniffed["g1"][marker] == 0
    for name, passed in pings(bed).items():
        held["legit " + name] = passed
    return held


def run_one(mutant, family_alone, workdir):
    """The checks that failed on a fresh bed protected with mutant (or none)."""
    import netbed
    os.makedirs(workdir)
    bed = netbed.NetBed(workdir, backend="legacy")
    env = bed.env()
    if mutant:
        env[MUTANT_ENV] = "/".join(str(part) for part in mutant)
    me = [sys.executable, os.path.abspath(__file__)]
    with bed:
        bed.ip("h", "link", "set", netbed.BRIDGE, "type", "bridge", "ageing_time", "30000")
        bed.run("h", me + ["host-rules", "start"], env=env)
        for guest in bed.guests:
            bed.run("h", me + ["hook", "online", guest.port, "--network", guest.network()],
                    env=env)
        open_other_families(bed, family_alone)
        held = run_checks(bed)
        held.update(drop_counters(bed, family_alone))
    return sorted(name for name, ok in held.items() if not ok)


def drop_counters(bed, family):
    """The per-VIF drop counters status reports (each guest chain's closing
    DROP) count the attacks g1's chains of the judged family dropped."""
    import netbed
    from vifrules.engine import _final_drop_packets
    tools = {"ebtables": ["ebtables-nft-save", "-c"],
             "iptables": [netbed.BACKENDS[bed.backend]["IPTABLES"] + "-save", "-c"],
             "ip6tables": [netbed.BACKENDS[bed.backend]["IP6TABLES"] + "-save", "-c"]}
    dump = bed.run("h", tools[family]).stdout
    chains = ["VRF-" + GUEST_PORT] + (family == "ebtables" and ["VRT-" + GUEST_PORT] or [])
    held = {}
    for chain in chains:
        packets = _final_drop_packets(dump, chain)
        held["status counts drops %s/%s" % (family, chain)] = bool(packets)
    return held


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated mutant numbers (from --list)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--json", help="write the results to this file")
    opts = parser.parse_args(argv)
    rules = guest_rules()
    chosen = list(range(len(rules)))
    if opts.only:
        chosen = [int(n) for n in opts.only.split(",")]
    if opts.list:
        for number, (family, table, chain, index, rule) in enumerate(rules):
            sys.stdout.write("%2d %s %s %s #%d: %s\n" % (number, family, table, chain, index,
                                                      " ".join(rule)))
        return 0
    import netbed
    reason = netbed.available()
    if reason:
        sys.stderr.write("mutants: cannot run here: %s\n" % reason)
        return 2
    started = time.time()
    results = {"baseline": {}, "mutants": []}
    with tempfile.TemporaryDirectory(prefix="vif-rules-mutants-") as top:
        for family in ("ebtables", "iptables"):
            failed = run_one(None, family, os.path.join(top, "baseline-" + family))
            results["baseline"][family] = failed
            legit = [name for name in failed if name.startswith("legit ")]
            if legit:
                sys.stdout.write("mutants: the unmutated policy fails (%s alone): %s\n"
                                 % (family, ", ".join(legit)))
                return 2
            # What only another family stops (ip6tables' u32 guards of
            # neighbour discovery, ebtables' delivery to the owner alone)
            # cannot judge this one's rules.
            sys.stdout.write("mutants: %s alone does not stop (left to the others): %s\n"
                             % (family, ", ".join(failed) or "-"))
        for number in chosen:
            family, table, chain, index, rule = rules[number]
            mode = family == "ebtables" and "ebtables" or "iptables"
            failed = run_one((family, table, chain, index), family,
                             os.path.join(top, "mutant-%d" % number))
            failed = [name for name in failed if name not in results["baseline"][mode]]
            results["mutants"].append({"number": number, "family": family, "table": table,
                                       "chain": chain, "index": index, "rule": list(rule),
                                       "killed_by": failed})
            sys.stdout.write("%2d %-9s %s #%-2d %-8s %s%s\n" % (
                number, family, chain, index, failed and "killed" or "SURVIVED",
                " ".join(rule)[:70], failed and (" <- " + ", ".join(failed[:3])) or ""))
            sys.stdout.flush()
    survivors = [m for m in results["mutants"] if not m["killed_by"]]
    results["survived"] = len(survivors)
    results["seconds"] = round(time.time() - started, 1)
    sys.stdout.write("mutants: %d of %d killed, %d survived (%.0f s)\n" % (
        len(results["mutants"]) - len(survivors), len(results["mutants"]), len(survivors),
        results["seconds"]))
    if opts.json:
        with open(opts.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return survivors and 1 or 0


def _stop(signum, frame):
    raise SystemExit(128 + signum)  # the bed's namespaces go on the way out


if __name__ == "__main__":
    if sys.argv[1:2] in (["hook"], ["host-rules"]):
        sys.exit(hook(sys.argv[1:]))
    signal.signal(signal.SIGTERM, _stop)
    sys.exit(main())
