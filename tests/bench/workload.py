"""The guests of the benchmark: names, MACs, addresses, and the files and
restore inputs that put N of them on a host fast.

Only documentation addresses. Resident guests have two IPv4 addresses each
(198.51.100.x and 203.0.113.x; they repeat every 254 guests, which the rules
do not mind). The measured guest is vif999.0 (a deep trie path, never first
in any list) with 192.0.2.99, the forwarding bed's subnet, and 203.0.113.99.
"""

import json
import os

MEASURED_DOMID = 999
MEASURED_VIF = "vif%d.0" % MEASURED_DOMID
MEASURED_IPS = ["192.0.2.99", "203.0.113.99"]


def mac_for(domid):
    return "02:00:00:%02x:%02x:01" % (domid >> 8, domid & 0xff)


def ips_for(domid):
    if domid == MEASURED_DOMID:
        return list(MEASURED_IPS)
    x = domid % 254 + 1
    return ["198.51.100.%d" % x, "203.0.113.%d" % x]


def resident_domids(count):
    """The first count domids from 1 up, leaving out the measured guest's."""
    result = []
    domid = 1
    while len(result) < count:
        if domid != MEASURED_DOMID:
            result.append(domid)
        domid += 1
    return result


def network_json(domid):
    """Nova's per-NIC object, as the hook receives it."""
    return json.dumps({
        "label": "public", "mac": mac_for(domid),
        "ips": [{"ip": ip, "netmask": "255.255.255.0", "enabled": "1"} for ip in ips_for(domid)],
        "ip6s": []})


def vif_name(domid):
    return "vif%d.0" % domid


# ------------------------------------------------------------ ours

def write_state(state_dir, domids):
    """The state files our hook would have written (format of vifrules/state.py)."""
    if not os.path.isdir(state_dir):
        os.makedirs(state_dir)
    for domid in domids:
        path = os.path.join(state_dir, vif_name(domid) + ".json")
        with open(path, "w") as handle:
            json.dump({"mac": mac_for(domid), "ipv4": ips_for(domid), "ipv6": []}, handle,
                      sort_keys=True)


def clear_state(state_dir, keep=()):
    if not os.path.isdir(state_dir):
        return
    for entry in os.listdir(state_dir):
        if entry.endswith(".json") and entry[:-5] not in keep:
            os.unlink(os.path.join(state_dir, entry))


# ------------------------------------------------------------ the baseline

def baseline_restore_inputs(domids):
    """(iptables-restore text, ebtables-restore text, [arptables argv tails]):
    the rules the per-rule baseline hook would have added for domids."""
    ipt = ["*filter"]
    ebt = ["*filter"]
    arp = []
    for domid in domids:
        vif, mac = vif_name(domid), mac_for(domid)
        ebt.append("-I FORWARD 1 -s ! %s -i %s -j DROP" % (mac, vif))
        for ip in ips_for(domid):
            ipt.append("-A FORWARD -m physdev --physdev-in %s -s %s -j ACCEPT" % (vif, ip))
            arp.append(["-A", "FORWARD", "--opcode", "Request", "--in-interface", vif,
                        "--source-ip", ip, "-j", "ACCEPT"])
            arp.append(["-A", "FORWARD", "--opcode", "Reply", "--in-interface", vif,
                        "--source-ip", ip, "--source-mac", mac, "-j", "ACCEPT"])
            ebt.append("-A FORWARD -p 0806 -o %s --arp-ip-dst %s -j ACCEPT" % (vif, ip))
            ebt.append("-A FORWARD -p 0800 -o %s --ip-dst %s -j ACCEPT" % (vif, ip))
    ipt.append("COMMIT")
    ebt.append("COMMIT")
    return "\n".join(ipt) + "\n", "\n".join(ebt) + "\n", arp
