"""A short smoke of `./build.sh mutants` (tests/mutants.py): the unmutated
policy passes every check it judges, and a mutant that drops a rule an
attack needs is killed by that attack (so the run can tell)."""

import pytest

import mutants


@pytest.fixture
def workdir(tmp_path, require_netns):
    return str(tmp_path)


def _number(chain, rule_end):
    for number, (family, table, name, index, rule) in enumerate(mutants.guest_rules()):
        if name == chain and rule[-len(rule_end):] == rule_end:
            return number, (family, table, name, index)
    raise AssertionError("no rule of %s ends in %s" % (chain, rule_end))


def test_every_rule_of_the_test_guest_is_a_mutant():
    rules = mutants.guest_rules()
    families = set(r[0] for r in rules)
    assert families == {"ebtables", "iptables", "ip6tables"}
    assert len(rules) >= 30  # IPv4 + IPv6 guest: both directions of ebtables, both IP families


def test_baseline_holds_and_a_needed_rule_is_missed(workdir):
    baseline = mutants.run_one(None, "ebtables", workdir + "/baseline")
    assert not [name for name in baseline if name.startswith("legit ")], baseline
    _, mutant = _number("VRF-vif1.0", ("--ip-sport", "67", "-j", "DROP"))
    killed = mutants.run_one(mutant, "ebtables", workdir + "/mutant")
    assert [name for name in killed if name.startswith("attack dhcp-server-reply@")], killed
    assert not [name for name in killed if name.startswith("legit ")], killed
