"""./build.sh demo: vif-rules on a throwaway bridge, in about a minute.

Builds a host namespace with a bridge, two guests and an uplink, protects the
guests through the vif hook, shows ordinary traffic passing and spoofing
blocked, then removes everything.
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import netbed  # noqa: E402

SPOOF_IP = "192.0.2.99"


def say(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def check(label, ok, want):
    mark = (ok == want) and "ok  " or "FAIL"
    say("  [%s] %-58s %s" % (mark, label, ok and "passes" or "blocked"))
    return ok == want


def spoofed_ping(bed, short):
    """Ping the uplink from an address the cloud did not give the guest."""
    bed.ip(short, "addr", "add", SPOOF_IP + "/32", "dev", "eth0")
    try:
        result = bed.run(short, ["ping", "-c", "1", "-W", "1", "-I", SPOOF_IP,
                                 netbed.UPLINK_IP], check=False, timeout=10)
        return result.returncode == 0
    finally:
        bed.ip(short, "addr", "del", SPOOF_IP + "/32", "dev", "eth0")


def main():
    reason = netbed.available()
    if reason:
        say("demo: cannot run here: " + reason)
        return 1
    good = True
    guests = netbed.GUESTS[:2]
    with netbed.NetBed(tempfile.mkdtemp(prefix="vif-rules-demo-"), guests=guests) as bed:
        g1, g2 = guests
        say("A host namespace with bridge %s (dom0 %s), uplink %s (%s),"
            % (netbed.BRIDGE, netbed.DOM0_IP, netbed.UPLINK_PORT, netbed.UPLINK_IP))
        say("guest 1 on %s (%s, %s), guest 2 on %s (%s, %s).\n"
            % (g1.port, g1.mac, g1.ipv4[0], g2.port, g2.mac, g2.ipv4[0]))
        say("1. Unprotected, guest 1 can send from an address that is not its own:")
        good &= check("guest 1 pings the uplink from %s" % SPOOF_IP, spoofed_ping(bed, "g1"), True)

        say("\n2. Protect the host and both guests through the vif hook:")
        say("  $ host-rules start")
        say("    " + bed.host_rules("start").stdout.strip())
        for guest in guests:
            say("  $ vif_rules.py online %s --network '%s'" % (guest.port, guest.network()[:60] + "...'"))
            say("    " + bed.hook("online", guest.port, "--network", guest.network()).stdout.strip())

        say("\n3. Ordinary traffic passes:")
        good &= check("guest 1 pings the uplink", bed.ping("g1", netbed.UPLINK_IP), True)
        good &= check("guest 1 pings guest 2", bed.ping("g1", g2.ipv4[0]), True)
        good &= check("TCP from guest 2 to the uplink",
                      bed.echo_works("tcp", "g2", "up", netbed.UPLINK_IP), True)

        say("\n4. Spoofing is blocked:")
        good &= check("guest 1 pings the uplink from %s" % SPOOF_IP, spoofed_ping(bed, "g1"), False)
        bed.ip("g1", "link", "set", "eth0", "address", "02:00:00:00:00:99")
        good &= check("guest 1 with a forged MAC pings the uplink",
                      bed.ping("g1", netbed.UPLINK_IP, count=1), False)
        bed.ip("g1", "link", "set", "eth0", "address", g1.mac)

        say("\n5. The guest goes offline: its port forwards nothing, guest 2 is untouched:")
        bed.hook("offline", g1.port)
        good &= check("guest 1 pings the uplink", bed.ping("g1", netbed.UPLINK_IP, count=1), False)
        good &= check("guest 2 pings the uplink", bed.ping("g2", netbed.UPLINK_IP), True)
    say("\nNamespaces removed. %s" % (good and "Demo passed." or "Demo FAILED."))
    return (not good) and 1 or 0


if __name__ == "__main__":
    sys.exit(main())
