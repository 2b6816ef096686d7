"""Under load (issue 11): 200 mixed online/offline events for 40 VIFs from 8
parallel callers, through the hook and through the plugin (run by a XAPI
stand-in exactly as XAPI runs it), with status polled alongside, end
exactly in the serial result, and no poll reports a protected VIF as
unprotected.

Each caller owns 5 VIFs, so each VIF's events keep their order; the
intended end state of a VIF is its last event. The serial result is the
same end state built one event at a time in a fresh bed.

What the polls may honestly be held to while events are in flight: the
host is protected in every poll (nothing fails here), and three stable
VIFs, protected before the storm and never touched by it, are in every
poll with nothing of theirs missing.
"""

import json
import os
import random
import threading
import time

import XenAPI

import faults
import netbed
from xapi_standin.server import XapiStandin

PLUGIN_DIR = os.path.join(netbed.TOP, "xapi-plugin")
PASSWORD = "s3cret"
CALLERS = 8
VIFS_PER_CALLER = 5
EVENTS = 200
SEED = 11
STABLE = [g.port for g in netbed.GUESTS]  # protected first, never touched


def _storm_vifs():
    """40 VIF names: domids sharing prefixes with each other and with the
    stable guests (1, 2, 3), both kinds, several devices."""
    names = []
    for domid in range(10, 30):
        names.append("vif%d.0" % domid)
        names.append("%s%d.%d" % (domid % 3 and "vif" or "tap", domid, 1 + domid % 2))
    return names


def _network(index, version):
    """Addresses for storm VIF index at its version-th online: IPv4 always,
    IPv6 on odd versions, so re-applies add and drop addresses."""
    ipv4 = ["198.51.100.%d" % (index + 1)]
    if version % 2:
        ipv4.append("203.0.113.%d" % (index + 1))
    data = {"mac": "02:00:00:02:00:%02x" % index,
            "ips": [{"ip": ip, "netmask": "255.255.255.0", "enabled": "1"} for ip in ipv4]}
    if version % 2:
        data["ip6s"] = [{"ip": "2001:db8:2::%x" % (index + 1), "netmask": "64",
                         "enabled": "1"}]
    return json.dumps(data)


def plan_events():
    """[[(caller's route, action, vif, network or None)] per caller] and
    the end state {vif: network or None}."""
    rng = random.Random(SEED)
    names = _storm_vifs()
    callers, final = [], {}
    versions = dict((name, 0) for name in names)
    for caller in range(CALLERS):
        own = names[caller * VIFS_PER_CALLER:(caller + 1) * VIFS_PER_CALLER]
        events = []
        for _ in range(EVENTS // CALLERS):
            vif = rng.choice(own)
            route = rng.choice(("hook", "plugin"))
            if final.get(vif) is not None and rng.random() < 0.5:
                events.append((route, "offline", vif, None))
                final[vif] = None
            else:
                versions[vif] += 1
                network = _network(names.index(vif), versions[vif])
                events.append((route, "online", vif, network))
                final[vif] = network
        callers.append(events)
    return callers, final


class Plugin(object):
    """host.call_plugin through the stand-in, one session per caller."""

    def __init__(self, xs, host):
        self.xs, self.host = xs, host
        self.local = threading.local()

    def call(self, fn, **args):
        session = getattr(self.local, "session", None)
        if session is None:
            session = XenAPI.Session(self.xs.url)
            session.xenapi.login_with_password("root", PASSWORD, "1.0", "vif-rules-load")
            self.local.session = session
        host = session.xenapi.host.get_all()[0]
        return json.loads(session.xenapi.host.call_plugin(host, "vif_rules", fn, args))


def _event(bed, plugin, route, action, vif, network):
    if route == "plugin":
        if action == "online":
            plugin.call("apply_vif", vif=vif, network=network)
        else:
            plugin.call("teardown_vif", vif=vif)
        return
    args = [action, vif] + (network and ["--network", network] or [])
    bed.hook(*args)


def test_parallel_storm_ends_in_the_serial_result_and_polls_stay_protected(
        tmp_path, require_netns):
    callers, final = plan_events()
    assert sum(len(events) for events in callers) == EVENTS
    assert len(final) == CALLERS * VIFS_PER_CALLER
    kinds = set((route, action) for events in callers for route, action, _, _ in events)
    assert len(kinds) == 4, "both routes carry both actions"

    made = []
    try:
        bed = netbed.NetBed(str(tmp_path / "storm"))
        os.makedirs(bed.workdir)
        made.append(bed)
        bed.create()
        xs = XapiStandin(plugin_dir=PLUGIN_DIR, password=PASSWORD)
        xs.start()
        made.append(xs)
        host = xs.add_host("host1", python_for_plugins=bed.python_in_host(),
                           plugin_env={"VIF_RULES_CONF": bed.conf})
        bed.write_config(XENSOURCE_INVENTORY=xs.inventory_path(host),
                         XAPI_SOCKET=xs.socket_path)
        plugin = Plugin(xs, host)
        bed.protect_all()

        polls, bad_polls, errors = [], [], []
        storming = threading.Event()
        storming.set()

        def poll(route):
            # One poller per route, at once: a storm that commits fast still
            # meets polls of both kinds while it runs.
            count = 0
            while storming.is_set() and count < 200:
                count += 1
                try:
                    if route == "plugin":
                        status = plugin.call("status")
                        seen = [v["vif"] for v in status["vifs"]]
                        verdict = status["protected"] and not [
                            m for m in status["missing"] if [s for s in STABLE if s in m]]
                        lacking = [s for s in STABLE if s not in seen]
                        polls.append("plugin")
                        if not verdict or lacking:
                            bad_polls.append((status["missing"], lacking))
                    else:
                        result = bed.host_rules("status", check=False)
                        polls.append("host-rules")
                        if result.returncode != 0 or "protected;" not in result.stdout:
                            bad_polls.append((result.returncode, result.stdout, result.stderr))
                except Exception as error:  # a poll that fails is a bad poll
                    bad_polls.append(repr(error))

        def caller(events):
            for event in events:
                try:
                    _event(bed, plugin, *event)
                except Exception as error:
                    errors.append((event[:3], repr(error)[-500:]))

        pollers = [threading.Thread(target=poll, args=(route,))
                   for route in ("plugin", "host-rules")]
        for poller in pollers:
            poller.start()
        started = time.time()
        threads = [threading.Thread(target=caller, args=(events,)) for events in callers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        storm_seconds = time.time() - started
        storming.clear()
        for poller in pollers:
            poller.join(timeout=120)
        assert not errors, errors[:5]
        assert len(polls) >= 10, "status must be polled alongside the storm"
        assert not bad_polls, "%d of %d polls said unprotected: %s" % (
            len(bad_polls), len(polls), bad_polls[:3])
        after_storm = faults.tables(bed), faults.state_files(bed)

        serial = netbed.NetBed(str(tmp_path / "serial"))
        os.makedirs(serial.workdir)
        made.append(serial)
        serial.create()
        serial.protect_all()
        for vif in sorted(final):
            if final[vif] is not None:
                serial.hook("online", vif, "--network", final[vif])
        expected = faults.tables(serial), faults.state_files(serial)
        assert after_storm[0] == expected[0], "the dumps differ from the serial result"
        assert after_storm[1] == expected[1], "the records differ from the serial result"
        assert len([v for v in final.values() if v]) >= 10
        print("storm: %d events in %.1fs, %d polls" % (EVENTS, storm_seconds, len(polls)))
    finally:
        for thing in reversed(made):
            if isinstance(thing, XapiStandin):
                thing.stop()
            else:
                thing.destroy()
