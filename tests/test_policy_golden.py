"""The exact text each backend renders from the policy, for a set of NICs
(libvirt's tests/nwfilterxml2firewalldata/ is the model). A change of the
rules shows up as a diff of tests/golden/<case>.<backend>:

    VIF_RULES_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_policy_golden.py

rewrites the files; review the diff, then commit it.
"""

import os

import pytest

from vifrules import devfilter, openflow, policy, ruleset
from vifrules.addresses import NicAddresses, VifName

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
REGENERATE = os.environ.get("VIF_RULES_REGENERATE_GOLDEN") == "1"
OFPORT = 7  # the guest's OpenFlow port number in the flows below

CASES = {
    "ipv4-only": ("vif1.0", NicAddresses("02:00:00:00:00:01", ["192.0.2.11"], [])),
    "ipv4-several": ("vif2.1", NicAddresses(
        "02:00:00:00:00:02", ["192.0.2.12", "192.0.2.22", "198.51.100.12"], [])),
    "ipv6-several": ("vif14.0", NicAddresses(
        "02:00:00:00:00:14", ["192.0.2.14"], ["2001:db8::14", "2001:db8:1::14"])),
    "tap": ("tap3.0", NicAddresses("02:00:00:00:00:03", ["192.0.2.13"], [])),
    "no-addresses": ("vif5.0", NicAddresses("02:00:00:00:00:05", [], [])),
}


def render_netfilter(vif, nic):
    lines = []
    for family in ruleset.FAMILIES:
        for table in ruleset.TABLES[family]:
            chains = ruleset.vif_chains(family, table, vif, nic)
            if not ruleset.wants_chains(family, nic) or not chains:
                continue
            lines.append("# %s %s" % (family, table))
            for chain in chains:
                lines.extend(["-A %s %s" % (chain.name, " ".join(rule)) for rule in chain.rules])
    return "\n".join(lines) + "\n"


def render_openflow(vif, nic):
    guest = policy.guest_policy(nic)
    lines = ["# %s's flows, port %d" % (vif.name, OFPORT)]
    lines.extend(openflow.vif_flows(vif, guest, OFPORT))
    lines.append("# the delivery flows with it alone on the bridge")
    lines.extend(openflow.shared_flows([(OFPORT, guest)]))
    lines.append("# its device filter (tc -batch)")
    lines.extend(devfilter.guard_lines([vif], devfilter.PROGRAM_FILE)[0])
    return "\n".join(lines) + "\n"


BACKENDS = {"netfilter": render_netfilter, "openflow": render_openflow}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_rendering_matches_the_golden_file(case, backend):
    name, nic = CASES[case]
    text = BACKENDS[backend](VifName(name), nic)
    path = os.path.join(GOLDEN, "%s.%s" % (case, backend))
    if REGENERATE:
        with open(path, "w") as handle:
            handle.write(text)
    with open(path) as handle:
        expected = handle.read()
    assert text == expected, "rendering differs from %s (regenerate if meant)" % path


def test_every_golden_file_has_its_case():
    wanted = set("%s.%s" % (c, b) for c in CASES for b in BACKENDS)
    assert set(os.listdir(GOLDEN)) == wanted


def test_policy_composes_the_named_filters_in_order():
    nic = CASES["ipv6-several"][1]
    assert policy.guest_policy(nic).names() == list(policy.FILTER_NAMES)


def test_no_address_means_no_allow_but_dhcp():
    guest = policy.guest_policy(CASES["no-addresses"][1])
    sent = [name for name, allow in guest.allows(policy.FROM)]
    assert sent == ["allow-dhcp-client"]
    received = [dict(a).get("udp_dst") for name, a in guest.allows(policy.TO)]
    assert received == [policy.DHCP_CLIENT_V4]


def test_cookie_names_its_vif_and_nothing_else():
    for name in ("vif1.0", "tap3.0", "vif32752.9999"):
        assert openflow.vif_of_cookie(openflow.vif_cookie(VifName(name))) == name
    for cookie in (0, openflow.HOST_COOKIE, openflow.SHARED_COOKIE, 0x4000):
        assert openflow.vif_of_cookie(cookie) is None
