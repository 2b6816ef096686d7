#!/usr/bin/env python
"""The per-rule approach of the 2010 script, as the benchmark's baseline.

    baseline_hook.py online|add VIF --network JSON
    baseline_hook.py offline|remove VIF [--network JSON]

Same arguments as xapi-plugin/vif_rules.py. One iptables/ebtables/arptables
process per rule, every rule in the built-in FORWARD chains:
  per VIF      ebtables -I FORWARD 1 -s ! MAC -i VIF -j DROP
  per address  iptables -A FORWARD -m physdev --physdev-in VIF -s IP -j ACCEPT
               arptables -A FORWARD --opcode Request --in-interface VIF --source-ip IP -j ACCEPT
               arptables -A FORWARD --opcode Reply --in-interface VIF --source-ip IP
                         --source-mac MAC -j ACCEPT
               ebtables -A FORWARD -p 0806 -o VIF --arp-ip-dst IP -j ACCEPT
               ebtables -A FORWARD -p 0800 -o VIF --ip-dst IP -j ACCEPT
offline deletes the same rules (-D), so it needs --network too (the 2010
script looked the addresses up again). The tool names come from the file
named by VIF_RULES_CONF (IPTABLES, EBTABLES, ARPTABLES), as for our hook.
"""

import json
import os
import subprocess
import sys


def tools():
    names = {"IPTABLES": "iptables", "EBTABLES": "ebtables", "ARPTABLES": "arptables"}
    path = os.environ.get("VIF_RULES_CONF")
    if path and os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                if key in names:
                    names[key] = value.strip().strip("\"'")
    return names


def rules(vif, mac, ips, t):
    """(command, add-or-insert args) in the order they are applied."""
    result = [(t["EBTABLES"], ["-I", "FORWARD", "1"], ["-s", "!", mac, "-i", vif, "-j", "DROP"])]
    for ip in ips:
        result.append((t["IPTABLES"], ["-A", "FORWARD"],
                       ["-m", "physdev", "--physdev-in", vif, "-s", ip, "-j", "ACCEPT"]))
        result.append((t["ARPTABLES"], ["-A", "FORWARD"],
                       ["--opcode", "Request", "--in-interface", vif, "--source-ip", ip,
                        "-j", "ACCEPT"]))
        result.append((t["ARPTABLES"], ["-A", "FORWARD"],
                       ["--opcode", "Reply", "--in-interface", vif, "--source-ip", ip,
                        "--source-mac", mac, "-j", "ACCEPT"]))
        result.append((t["EBTABLES"], ["-A", "FORWARD"],
                       ["-p", "0806", "-o", vif, "--arp-ip-dst", ip, "-j", "ACCEPT"]))
        result.append((t["EBTABLES"], ["-A", "FORWARD"],
                       ["-p", "0800", "-o", vif, "--ip-dst", ip, "-j", "ACCEPT"]))
    return result


def main(argv):
    network = None
    positional = []
    i = 0
    while i < len(argv):
        if argv[i] == "--network" and i + 1 < len(argv):
            network = argv[i + 1]
            i += 2
            continue
        positional.append(argv[i])
        i += 1
    if len(positional) != 2 or network is None:
        sys.stderr.write(__doc__)
        return 2
    action, vif = positional
    data = json.loads(network)
    mac = data["mac"]
    ips = [entry["ip"] for entry in data.get("ips", []) if entry.get("enabled") == "1"]
    failed = 0
    for tool, add, spec in rules(vif, mac, ips, tools()):
        if action in ("online", "add"):
            argv = [tool] + add + spec
        else:
            argv = [tool, "-D", "FORWARD"] + spec
        if subprocess.call(argv) != 0:
            failed = 1
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
