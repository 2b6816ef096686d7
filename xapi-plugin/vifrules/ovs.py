"""The Open vSwitch backend: the operations of engine.Engine, as OpenFlow flows.

What is wanted lives in the state directory (the same records as the bridge
backend); what is in force is the switch itself (its flows, by cookie). Every
change runs under the same lock and is one 'ovs-ofctl --bundle' transaction
per bridge: it swaps a VIF's flows atomically, so no frame passes while it
runs and a rejected flow leaves nothing half-done. A VIF's port is found by
name, on whatever bridge it is (one ovs-vsctl run reads every bridge, port
and port number at once). Flows whose cookie is not ours are never touched.

VIF events are handed over (vifrules.handover): the lock's holder commits
every change pending in one bundle per bridge. As in engine.Engine, each
operation marks the VIFs it changes before it touches the switch and clears
the marks once the switch has it; an operation that finds marks left behind
rebuilds their bridges from the records first, so a kill at any point
converges (a teardown's flows never outlive its record unseen).
"""

from vifrules import devfilter, handover, openflow, policy
from vifrules.engine import CONTEXT_LINES, sync_plan
from vifrules.compat import current_exception
from vifrules.errors import InvalidArgument, StateError, VifRulesError
from vifrules.log import left_to_finish
from vifrules.ruleset import sorted_vifs
from vifrules.lock import Lock, locked
from vifrules.runner import failure, run
from vifrules.state import HOST, StateDir

OVS_VSCTL, OVS_OFCTL = "ovs-vsctl", "ovs-ofctl"
TC_BATCH = [devfilter.TC, "-force", "-batch", "-"]  # every line tried; each failure named
# Bundles are OpenFlow 1.4, which a bridge offers by default only from OVS
# 2.8; on older ones (XenServer 7.x, Citrix Hypervisor 8.2, XCP-ng 8.2: 2.5)
# it is added to the bridge's protocols when ovs-ofctl cannot speak it.
DEFAULT_PROTOCOLS = ["OpenFlow10", "OpenFlow11", "OpenFlow12", "OpenFlow13"]
BUNDLE_PROTOCOL = "OpenFlow14"
NO_BUNDLE_PROTOCOL = "version negotiation failed"
GUEST_KINDS = ("vif", "tap")
BACKEND_NAME = "openflow"


class Switch(object):
    """Bridges, their interfaces and port numbers, as ovs-vsctl lists them."""

    def __init__(self, bridges, where):
        self.bridges = bridges  # names, sorted
        self.where = where  # interface name -> (bridge, ofport)

    def port(self, name):
        """(bridge, ofport) of an interface, or None if it is on no bridge
        or has no port number (yet)."""
        return self.where.get(name)

    def ports_on(self, bridge, names):
        result = []
        for name in names:
            found = self.where.get(name)
            if found is not None and found[0] == bridge:
                result.append(found[1])
        return result

    def guest_ports(self):
        """The names of the guest ports (vif and tap devices), sorted."""
        names = [name for name in self.where if _is_guest(name)]
        names.sort()
        return names

    def managed(self, trusted):
        """The bridges vif-rules keeps: those with a guest port or a trusted uplink."""
        result = []
        for name, (bridge, ofport) in self.where.items():
            if (_is_guest(name) or name in trusted) and bridge not in result:
                result.append(bridge)
        result.sort()
        return result


def _is_guest(name):
    return name[:3] in GUEST_KINDS


def _csv_rows(text):
    rows = []
    for line in text.splitlines():
        if line.strip():
            rows.append([cell.strip().strip('"') for cell in line.split(",")])
    return rows


def parse_listing(text):
    """The output of LIST_ARGS -> Switch. Three tables, each row ending
    where the next table's rows begin (they differ in their first cell)."""
    sections = text.split("\n\n")
    if len(sections) < 3:
        raise InvalidArgument("ovs-vsctl", text[:200], "unexpected listing")
    bridges, ports, interfaces = [_csv_rows(s) for s in sections[:3]]
    bridge_of_port = {}
    names = []
    for row in bridges:
        names.append(row[0])
        for uuid in row[1].split():
            bridge_of_port[uuid] = row[0]
    bridge_of_interface = {}
    for row in ports:
        if row[0] in bridge_of_port:
            for uuid in row[2].split():
                bridge_of_interface[uuid] = bridge_of_port[row[0]]
    where = {}
    for row in interfaces:
        uuid, name, ofport = row[0], row[1], row[2]
        if uuid in bridge_of_interface and ofport.isdigit() and int(ofport) > 0:
            where[name] = (bridge_of_interface[uuid], int(ofport))
    names.sort()
    return Switch(names, where)


LIST_ARGS = ["--format=csv", "--data=bare", "--no-headings", "--",
             "--columns=name,ports", "list", "Bridge", "--",
             "--columns=_uuid,name,interfaces", "list", "Port", "--",
             "--columns=_uuid,name,ofport", "list", "Interface"]

def parse_flows(text):
    """dump-flows text -> [(cookie, table, packets, priority, match)]. A line
    reads ' cookie=0x1, duration=1s, table=3, n_packets=0, ..., priority=5,MATCH
    actions=...'; table 0 goes unsaid."""
    result = []
    for line in text.splitlines():
        if " actions=" not in line or "cookie=" not in line:
            continue
        parts = line.split(" actions=")[0].strip().split(", ")
        fields = {}
        for part in parts[:-1]:
            if "=" in part:
                key, value = part.split("=", 1)
                fields[key] = value
        last = (parts[-1] + ",").split(",", 1)
        priority, match = last[0], last[1][:-1]
        if not priority.startswith("priority="):
            continue
        result.append((int(fields["cookie"], 16), int(fields.get("table", "0")),
                       int(fields.get("n_packets", "0")), int(priority[len("priority="):]),
                       match))
    return result


class OvsEngine(object):
    def __init__(self, config, log=None, log_error=None):
        self.config = config
        self.state = StateDir(config.state_dir)
        self.log = log or (lambda message: None)
        self.log_error = log_error or (lambda error: None)

    def _lock(self):
        return Lock(self.config.lock_file, self.config.lock_timeout)

    # ------------------------------------------------------------ the switch

    def _run(self, argv, stdin_text=None, check=True):
        return run(argv, stdin_text, check, self.config.command_timeout)

    def _switch(self):
        return parse_listing(self._run([OVS_VSCTL] + LIST_ARGS)[1])

    def _transaction(self, bridge, text):
        """One atomic change of a bridge's flows. If it is refused, the error
        holds the input around the flow ovs-ofctl names (context) and the
        VIFs whose flows those are (vifs)."""
        argv = [OVS_OFCTL, "--bundle", "add-flows", bridge, "-"]
        result = self._run(argv, text, False)
        if result[0] != 0 and NO_BUNDLE_PROTOCOL in result[2] and self._offer_bundles(bridge):
            result = self._run(argv, text, False)
        if result[0] != 0:
            error = failure(argv, result, self.config.command_timeout)
            lines = text.split("\n")
            failing = _failing_lines(result[2], lines)
            error.vifs = _vifs_of_lines([lines[i] for i in failing])
            error.context = _context(lines, failing)
            raise error

    def _offer_bundles(self, bridge):
        """Add OpenFlow 1.4 to the protocols bridge offers (the others kept,
        an empty list meaning the defaults); True if it was missing. ovs-vsctl
        returns once ovs-vswitchd has taken the change."""
        listed = self._run([OVS_VSCTL, "get", "bridge", bridge, "protocols"])[1]
        protocols = [p.strip().strip('"') for p in listed.strip().strip("[]").split(",")
                     if p.strip()] or list(DEFAULT_PROTOCOLS)
        if BUNDLE_PROTOCOL in protocols:
            return False
        self.log("bridge %s: adding %s to its protocols for atomic bundles" % (
            bridge, BUNDLE_PROTOCOL))
        self._run([OVS_VSCTL, "set", "bridge", bridge,
                   "protocols=" + ",".join(protocols + [BUNDLE_PROTOCOL])])
        return True

    def _guard(self, vifs):
        """Put the device filter (vifrules.devfilter) on the guest ports of
        vifs, before their flows let them send. If tc refuses one, the error
        names the VIFs whose filter lines failed (vifs), as _transaction's."""
        if not vifs:
            return
        lines, owners = devfilter.guard_lines(vifs, devfilter.program_path())
        result = self._run(TC_BATCH, "\n".join(lines) + "\n", False)
        if result[0] == 0:
            return
        failing = [n - 1 for n in devfilter.failed_lines(result[2]) if 0 < n <= len(lines)]
        refused = [i for i in failing if owners[i] is not None]
        if failing and not refused:
            return  # only qdisc lines: their filters are in force
        error = failure(TC_BATCH, result, self.config.command_timeout)
        error.vifs = _unique([owners[i] for i in refused])
        error.context = _context(lines, refused)
        raise error

    def _guarded(self, vifs):
        """{name: True if its device filter is in force} for the guest ports
        of vifs (one tc run for all)."""
        if not vifs:
            return {}
        text = self._run(TC_BATCH, "\n".join(devfilter.reading_lines(vifs)) + "\n", False)[1]
        return devfilter.guarded(vifs, text)

    def _trusted(self, trusted=None):
        """The uplinks to trust: as given, else as last put in force, else as
        configured."""
        if trusted is not None:
            return trusted
        recorded = self.state.read_trusted()
        if recorded is not None:
            return recorded
        return self.config.trusted_interfaces

    def _records(self, exclude=()):
        """[(VifName, Policy)] of every VIF on record, sorted; a record that
        cannot be read is left out (that VIF stays closed) and reported."""
        return [(vif, policy.guest_policy(nic))
                for vif, nic in self.state.readable(self.log_error)
                if vif.name not in exclude]

    def _host_flows(self, switch, bridge, trusted):
        return openflow.host_flows(switch.ports_on(bridge, trusted))

    def _on_bridge(self, switch, bridge, records):
        """[(VifName, Policy, ofport)] of records whose port is on bridge."""
        result = []
        for vif, guest in records:
            found = switch.port(vif.name)
            if found is not None and found[0] == bridge:
                result.append((vif, guest, found[1]))
        return result

    # ------------------------------------------------------------ marks

    def _touched(self, switch, names, trusted):
        """The bridges an unfinished operation on names may have changed:
        those of their ports, every bridge of ours for HOST or a port gone."""
        bridges = []
        for name in names:
            found = switch.port(name)
            if name == HOST or found is None:
                return switch.managed(trusted)
            if found[0] not in bridges:
                bridges.append(found[0])
        bridges.sort()
        return bridges

    def _repair(self, switch, names, exclude=()):
        """Redo: rebuild from the records the bridges that unfinished
        operations on names may have left half done. Returns the VIFs whose
        flows were there and no record wants (now gone)."""
        self.log("repairing after an unfinished operation on %s" % ", ".join(_unique(names)))
        trusted = self._trusted()
        report = self._rebuild(switch, self._touched(switch, names, trusted), trusted,
                               self._records(exclude))[0]
        removed = []
        for one in report.values():
            removed.extend(one["removed"])
        return removed

    # ------------------------------------------------------------ one VIF

    def apply_vif(self, vif, nic):
        """Protect vif with the addresses of nic, replacing whatever it had.
        Handed over to whoever holds the lock (group commit)."""
        return handover.submit(self.config, handover.Change(handover.APPLY, vif, nic),
                               lambda: self)

    def teardown_vif(self, vif):
        return handover.submit(self.config, handover.Change(handover.TEARDOWN, vif),
                               lambda: self)

    def _one_change(self, change):
        if change.kind == handover.APPLY:
            return self._apply_vif(change.vif, change.nic)
        if change.kind == handover.SYNC:
            return self._sync(change.running, change.trusted)
        return self._teardown_vif(change.vif)

    def _apply_vif(self, vif, nic):
        left_behind = self.state.pending()
        self.state.mark_pending(vif.name)  # fails before anything changed
        try:
            previous = self.state.read(vif.name)
        except StateError:  # the delivery flows of what it had are unknown: rebuild
            self.log_error(current_exception())
            previous, left_behind = None, left_behind + [vif.name]
        self.state.write(vif.name, nic)
        try:
            switch = self._switch()
            found = switch.port(vif.name)
            if left_behind:
                self._repair(switch, left_behind + [vif.name])
            elif found is None:
                self.log("%s is on no Open vSwitch bridge yet: its flows come with "
                         "its port (sync)" % vif)
            else:
                before = None
                if previous is not None:
                    before = policy.guest_policy(previous)
                self._guard([vif])
                self._swap(switch, found[0], found[1], vif, policy.guest_policy(nic), before)
        except Exception:
            self._fail_closed(vif, left_behind)
            raise
        self.state.clear_pending(left_behind + [vif.name])
        self.log("applied %s mac=%s ipv4=%s ipv6=%s (was %s)" % (
            vif, nic.mac, ",".join(nic.ipv4) or "-", ",".join(nic.ipv6) or "-",
            (previous and "protected") or "new"))
        return {"vif": vif.name, "replaced": previous is not None}

    def _fail_closed(self, vif, left_behind):
        """After a failed apply: the guest keeps no access rather than a half
        state. Its record goes, then its bridge is rebuilt from the records
        (its old and new flows go, and its delivery flows); the marks stay
        unless that worked, so the next operation finishes it."""
        self.log("apply of %s failed: removing its flows (fail closed)" % vif)
        names = left_behind + [vif.name]
        try:
            self.state.remove(vif.name)
            self._repair(self._switch(), names)
        except VifRulesError:
            left_to_finish(self.log, self.log_error, "fail-closed teardown of %s" % vif,
                           current_exception())
            return
        self.state.clear_pending(names)

    def _swap(self, switch, bridge, ofport, vif, guest, before):
        """One transaction: vif's flows (none if guest is None), the bridge's
        host flows, and the delivery flows of the keys vif had (before) or has."""
        self._transaction(bridge, self._bundle(switch, bridge, [(vif, ofport, guest, before)],
                                               self._trusted()))

    def _bundle(self, switch, bridge, changes, trusted):
        """The transaction that puts changes [(VifName, ofport or None, Policy
        after or None, Policy before or None)] of VIFs of bridge in force:
        each one's flows replaced, the host flows rewritten once, and the
        delivery flows of every key they had or have brought in line with
        what they have now and what the records say of the others."""
        keys, deletes, flows, entries, some = [], [], [], [], None
        for vif, ofport, guest, before in changes:
            for one in (guest, before):
                if one is not None:
                    keys.extend(openflow.delivery_keys(one))
                    some = one
            deletes.extend(openflow.vif_deletes(vif, ofport))
            if guest is not None:
                flows.extend(openflow.vif_flows(vif, guest, ofport))
                entries.append((ofport, openflow.delivery_keys(guest)))
        shared = []
        if keys:
            entries.extend(self._entries(switch, bridge, [c[0] for c in changes], some))
            shared = openflow.shared_changes(keys, entries)
        return openflow.change_bundle(deletes, self._host_flows(switch, bridge, trusted),
                                      shared, flows)

    def _entries(self, switch, bridge, group, guest):
        """[(ofport, delivery keys)] of the VIFs on record on bridge other
        than those of group, for the keys a change of group touches. A key
        of one of group can be another's too: its own MAC is its twin's (vif
        and tap of one NIC), its IPv6 groups another IPv6 guest's, the DHCP
        broadcast everyone's (guest: any one's policy gives it). So only
        those records are read; of the others, their port is enough. (Two
        guests given one IPv4 address share its ARP key only after sync.)"""
        with_ipv6 = {}
        for other in self.state.names_with_ipv6():
            with_ipv6[other.name] = 1
        inside, twins = {}, {}
        for vif in group:
            inside[vif.name] = 1
            twins[(vif.domid, vif.devid)] = 1
        common = openflow.broadcast_keys(guest)
        entries = []
        for other in self.state.names():
            found = switch.port(other.name)
            if found is None or found[0] != bridge or other.name in inside:
                continue
            if other.name in with_ipv6 or (other.domid, other.devid) in twins:
                try:
                    nic = self.state.read(other.name)
                except StateError:
                    self.log_error(current_exception())
                    continue
                if nic is not None:
                    entries.append((found[1], openflow.delivery_keys(policy.guest_policy(nic))))
            else:
                entries.append((found[1], common))
        return entries

    def _teardown_vif(self, vif):
        """Remove every flow of vif, whatever the records say; success only
        once the switch holds nothing of it. The mark goes first and the
        record before the flows: a kill in between leaves the mark, and the
        next operation (or sync) rebuilds without it."""
        left_behind = self.state.pending()
        state_error = None
        try:
            self.state.mark_pending(vif.name)
        except StateError:
            state_error = current_exception()
        unreadable = False
        try:
            known = self.state.read(vif.name)
        except StateError:  # it goes all the same; its delivery flows are unknown
            self.log_error(current_exception())
            known, unreadable = None, True
        try:
            self.state.remove(vif.name)
        except StateError:
            state_error = current_exception()
        switch = self._switch()
        present = False
        if left_behind or unreadable or state_error is not None:
            present = vif.name in self._repair(switch, left_behind + [vif.name], [vif.name])
        else:
            self._remove_flows(switch, vif, known)
        if state_error is not None:
            raise state_error  # the flows are gone, but the record says otherwise
        self.state.clear_pending(left_behind + [vif.name])
        was_protected = known is not None or unreadable or present
        self.log("tore down %s%s" % (vif, (was_protected and " ") or " (was not on record)"))
        return {"vif": vif.name, "was_protected": was_protected}

    def _remove_flows(self, switch, vif, known):
        """vif's flows go from its bridge, or from every bridge of ours when
        its port is gone (its flows stay on the bridge it was on); known is
        its NicAddresses on record (None: not on record), whose delivery
        flows are rewritten without it."""
        before = None
        if known is not None:
            before = policy.guest_policy(known)
        found = switch.port(vif.name)
        if found is not None:
            self._swap(switch, found[0], found[1], vif, None, before)
            return
        for bridge in switch.managed(self._trusted()):
            self._swap(switch, bridge, None, vif, None, before)

    # ------------------------------------------------------------ group commit

    def commit_changes(self, changes):
        """Under the lock (vifrules.handover): commit handover.Change's in
        their order, [outcome] in that order. The VIF events between two
        syncs go together, one bundle per bridge for all; a sync rebuilds
        the host between them (as engine.Engine.commit_changes)."""
        return handover.in_order(changes, self._commit_events, self._one_change)

    def _commit_events(self, changes):
        """VIF events together, one bundle per bridge. If a bundle is
        refused, the records go back to what they were and the changes go
        again: the others together if ovs-ofctl named the one VIF whose flow
        failed (that one alone after them), else each alone. So one bad VIF
        fails alone, the others wait one extra commit."""
        if len(changes) == 1:
            return [handover.outcome_of(self._one_change, changes[0])]
        previous, unreadable = self._previous(changes)
        try:
            return [{"result": result}
                    for result in self._commit_together(changes, previous, unreadable)]
        except VifRulesError:
            error = current_exception()
            self.log_error(error)
        self._put_back(previous)
        outcomes = [None] * len(changes)
        culprits = [name for name in getattr(error, "vifs", None) or [] if name in previous]
        if len(culprits) == 1:
            self.log("group commit failed on %s: the other changes go again together"
                     % culprits[0])
            rest = [i for i in range(len(changes)) if changes[i].vif.name != culprits[0]]
            others = {}
            for name, nic in previous.items():
                if name != culprits[0]:
                    others[name] = nic
            try:
                results = self._commit_together([changes[i] for i in rest], others,
                                                [n for n in unreadable if n in others])
                for i, result in zip(rest, results):
                    outcomes[i] = {"result": result}
            except VifRulesError:
                self.log_error(current_exception())
                self._put_back(others)
        else:
            self.log("group commit of %d changes failed: each is retried alone" % len(changes))
        for i in range(len(changes)):
            if outcomes[i] is None:
                outcomes[i] = handover.outcome_of(self._one_change, changes[i])
        return outcomes

    def _previous(self, changes):
        """({name: NicAddresses on record or None}, [names whose record
        cannot be read]) of the VIFs of changes."""
        previous, unreadable = {}, []
        for change in changes:
            name = change.vif.name
            if name not in previous:
                try:
                    previous[name] = self.state.read(name)
                except StateError:
                    self.log_error(current_exception())
                    previous[name] = None
                    unreadable.append(name)
        return previous, unreadable

    def _put_back(self, records):
        """The records of a group that failed, back to what they were."""
        for name, nic in records.items():
            if nic is None:
                self.state.remove(name)
            else:
                self.state.write(name, nic)

    def _commit_together(self, changes, previous, unreadable):
        """The end state of changes in order (online then offline of one VIF
        ends offline), recorded, then one bundle per bridge touched: each
        VIF's flows replaced, the host and delivery flows rewritten once."""
        left_behind = self.state.pending()
        names = list(previous.keys())
        names.sort()
        for name in names:
            self.state.mark_pending(name)
        results, wanted, vifs = handover.end_state(changes, previous)
        for name in names:
            if wanted[name] is None:
                self.state.remove(name)
            else:
                self.state.write(name, wanted[name])
        switch = self._switch()
        if left_behind or unreadable:
            self._repair(switch, left_behind + names)
            count = "a rebuild"
        else:
            count = self._commit_bundles(switch, [vifs[n] for n in names], previous, wanted)
        self.state.clear_pending(left_behind + names)
        self.log("group commit: %d changes of %d VIFs in %s" % (len(changes), len(names), count))
        return results

    def _commit_bundles(self, switch, vifs, previous, wanted):
        trusted = self._trusted()
        by_bridge = {}
        for vif in vifs:
            before, guest = None, None
            if previous[vif.name] is not None:
                before = policy.guest_policy(previous[vif.name])
            if wanted[vif.name] is not None:
                guest = policy.guest_policy(wanted[vif.name])
            found = switch.port(vif.name)
            if found is not None:
                by_bridge.setdefault(found[0], []).append((vif, found[1], guest, before))
            elif guest is None:  # its port is gone: its flows stay where it was
                for bridge in switch.managed(trusted):
                    by_bridge.setdefault(bridge, []).append((vif, None, None, before))
            else:
                self.log("%s is on no Open vSwitch bridge yet: its flows come with "
                         "its port (sync)" % vif)
        bridges = list(by_bridge.keys())
        bridges.sort()
        guarded = []
        for bridge in bridges:
            guarded.extend([c[0] for c in by_bridge[bridge] if c[2] is not None])
        self._guard(guarded)
        for bridge in bridges:
            self._transaction(bridge, self._bundle(switch, bridge, by_bridge[bridge], trusted))
        return "%d bundle(s)" % len(bridges)

    # ------------------------------------------------------------ the host

    def setup_host(self, trusted=None):
        """The pipeline plus every VIF on record on every bridge of ours; idempotent."""
        trusted = self._trusted(trusted)
        return locked(self._lock(), self._setup_host, trusted)

    def _setup_host(self, trusted, records=None):
        left_behind = self.state.pending()
        self.state.mark_pending(HOST)
        self.state.write_trusted(trusted)
        switch = self._switch()
        if records is None:
            records = self._records()
        report, protected = self._rebuild(switch, switch.managed(trusted), trusted, records)
        self.state.clear_pending(left_behind + [HOST])
        self.log("host flows in force on %s; trusted uplinks: %s" % (
            " ".join(switch.managed(trusted)) or "no bridge", " ".join(trusted) or "none"))
        return {"vifs": protected, "tables": report}

    def _rebuild(self, switch, bridges, trusted, records):
        """Every flow of ours on bridges rewritten from records, one
        transaction each, after the device filters of their guests (one
        whose filter tc refuses gets no flows: it stays closed). Returns
        ({backend/bridge: {"removed": the VIFs whose flows were there and
        are not wanted, "hooked": []}}, the VIFs now protected)."""
        report, protected = {}, []
        for bridge in bridges:
            before = parse_flows(self._run([OVS_OFCTL, "dump-flows", bridge,
                                            "table=%d" % openflow.EGRESS])[1])
            on_bridge = self._on_bridge(switch, bridge, records)
            closed = self._guard_or_close([vif for vif, guest, ofport in on_bridge])
            on_bridge = [one for one in on_bridge if one[0].name not in closed]
            wanted = {}
            for vif, guest, ofport in on_bridge:
                wanted[vif.name] = 1
                protected.append(vif.name)
            removed = {}
            for cookie, table, packets, priority, match in before:
                name = openflow.vif_of_cookie(cookie)
                if name is not None and name not in wanted:
                    removed[name] = 1
            removed = list(removed.keys())
            removed.sort()
            self._transaction(bridge, openflow.bridge_bundle(
                self._host_flows(switch, bridge, trusted),
                openflow.shared_flows([(ofport, guest) for vif, guest, ofport in on_bridge]),
                [openflow.vif_flows(vif, guest, ofport) for vif, guest, ofport in on_bridge]))
            report["%s/%s" % (BACKEND_NAME, bridge)] = {"removed": removed, "hooked": []}
        protected.sort()
        return report, protected

    def _guard_or_close(self, vifs):
        """_guard for a rebuild: returns the names of vifs whose filter is not
        in force (all of them if tc named none), logged; the others have it."""
        try:
            self._guard(vifs)
        except VifRulesError:
            error = current_exception()
            self.log_error(error)
            closed = getattr(error, "vifs", None) or [vif.name for vif in vifs]
            self.log("no device filter, so no flows (closed): %s" % ", ".join(closed))
            return closed
        return []

    def stop_host(self):
        """Remove every flow of ours: the bridges forward as without vif-rules."""
        return locked(self._lock(), self._stop_host)

    def _stop_host(self):
        self.state.mark_pending(HOST)
        switch = self._switch()
        for bridge in switch.bridges:
            self._transaction(bridge, openflow.delete_line(openflow.COOKIE_PREFIX,
                                                           openflow.COOKIE_MASK) + "\n")
        guests = switch.guest_ports()
        if guests:  # a port without the filter makes its line fail: nothing to undo there
            self._run(TC_BATCH, "\n".join(devfilter.removal_lines(guests)) + "\n", False)
        self.state.clear_pending([HOST])
        self.log("host flows removed: the forward path is OPEN")

    # ------------------------------------------------------------ reconciling

    def sync(self, running, trusted=None):
        """As engine.Engine.sync: running maps each running VIF's name to
        (VifName, NicAddresses or None); one transaction per bridge rebuilds
        all, so it also re-protects every VIF after a flush of the flows.
        Handed over like a VIF event: those queued before it are committed
        before it, those after it after it."""
        return handover.submit(self.config, handover.Change(
            handover.SYNC, running=running, trusted=trusted), lambda: self)

    def _sync(self, running, trusted):
        self.state.mark_pending(HOST)
        trusted = self._trusted(trusted)
        on_record = {}
        for vif, guest in self._records():
            on_record[vif.name] = (vif, guest.nic)
        plan = sync_plan(on_record, running)
        wanted, removed, applied = plan["wanted"], plan["removed"], plan["applied"]
        unchanged, without_data = plan["unchanged"], plan["without_data"]
        # The switch follows what is wanted even if a record cannot be
        # written: a VIF that no longer runs loses its flows in any case.
        state_errors = []
        for name in removed:
            try:
                self.state.remove(name)
            except StateError:
                state_errors.append(current_exception())
        for name in applied:
            try:
                self.state.write(name, wanted[name][1])
            except StateError:
                state_errors.append(current_exception())
        records = [(vif, policy.guest_policy(wanted[vif.name][1]))
                   for vif in sorted_vifs([one[0] for one in wanted.values()])]
        result = self._setup_host(trusted, records)
        if state_errors:
            raise state_errors[0]
        removed_flows = []
        for report in result["tables"].values():
            removed_flows.extend(report["removed"])
        self.log("sync: removed %s; applied %s; unchanged %d; without data %s" % (
            ",".join(removed) or "-", ",".join(applied) or "-", len(unchanged),
            ",".join(without_data) or "-"))
        return {"removed": removed, "applied": applied, "unchanged": unchanged,
                "without_data": without_data, "removed_chains": removed_flows,
                "protected": result["vifs"]}

    # ------------------------------------------------------------ reporting

    def status(self):
        """What is in force, read from the switch under the lock (a bounded
        wait): one dump per bridge of ours. An operation that did not finish
        (its mark is left) is reported as not protected."""
        return locked(self._lock(), self._status)

    def _status(self):
        missing = []
        for name in self.state.pending():
            missing.append("%s: an operation did not finish; the next operation "
                           "or sync completes it" % name)
        switch = self._switch()
        trusted = self._trusted()
        flows = {}
        for bridge in switch.managed(trusted):
            status, text = self._run([OVS_OFCTL, "dump-flows", bridge], None, False)[:2]
            if status != 0:
                missing.append("%s/%s: cannot read the flows" % (BACKEND_NAME, bridge))
                continue
            flows[bridge] = parse_flows(text)
            if not [f for f in flows[bridge] if f[0] == openflow.HOST_COOKIE]:
                missing.append("%s/%s: the host flows are gone" % (BACKEND_NAME, bridge))
        records = self._records()
        guarded = self._guarded([vif for vif, guest in records
                                 if switch.port(vif.name) is not None])
        vifs = []
        for vif, guest in records:
            entry = guest.nic.to_dict()
            entry["vif"] = vif.name
            entry["dropped"] = {}
            found = switch.port(vif.name)
            if found is not None and found[0] in flows:
                own = [f for f in flows[found[0]] if f[0] == openflow.vif_cookie(vif)]
                if not own:
                    missing.append("%s/%s: %s is on record but its flows are gone"
                                   % (BACKEND_NAME, found[0], vif))
                entry["dropped"] = _drop_counters(own)
            if guarded.get(vif.name) is False:
                missing.append("%s: %s is on record but its device filter is gone "
                               "(only-own-ethertypes)" % (devfilter.TC, vif))
            vifs.append(entry)
        from vifrules.vifpatch import hook_state
        return {"protected": not missing, "missing": missing, "trusted": trusted,
                "vifs": vifs, "hook": hook_state()}


def _unique(names):
    result = []
    for name in names:
        if name not in result:
            result.append(name)
    return result


def _failing_lines(err, lines):
    """The indexes of the input lines ovs-ofctl says failed: its own parse
    error names the line ('ovs-ofctl: -:7: ...'), the switch's names the
    flow ('Error OFPBAC_... for: OFPT_FLOW_MOD ...: ADD priority=P,...
    cookie:0x...'), found here by its cookie and priority."""
    failing = []
    for said in err.splitlines():
        if said.startswith("ovs-ofctl: -:"):
            number = said.split(":")[2]
            if number.isdigit() and 0 < int(number) <= len(lines):
                failing.append(int(number) - 1)
        elif said.startswith("Error ") and " cookie:0x" in said:
            try:
                cookie = int(said.split(" cookie:")[1].split()[0], 16)
            except ValueError:
                continue
            wanted = ["cookie=%s," % openflow.cookie_text(cookie), "table=0,"]
            if " table:" in said:  # table 0 goes unsaid
                wanted[1] = "table=%s," % said.split(" table:")[1].split()[0]
            if " priority=" in said:
                wanted.append("priority=%s," % said.split(" priority=")[1].split(",")[0].split()[0])
            for index in range(len(lines)):
                if not [w for w in wanted if w not in lines[index]]:
                    failing.append(index)
                    break
    return failing


def _vifs_of_lines(lines):
    """The VIFs whose cookie these bundle lines carry."""
    names = []
    for line in lines:
        if "cookie=0x" not in line:
            continue
        text = line.split("cookie=0x")[1].split(",")[0].split("/")[0].split()[0]
        try:
            name = openflow.vif_of_cookie(int(text, 16))
        except ValueError:
            continue
        if name is not None and name not in names:
            names.append(name)
    return names


def _context(lines, failing):
    """The input lines around the first failing one, as the bridge engine
    logs a restore's (failing ones marked '>'); the first lines if none is named."""
    if failing:
        first = min(failing)
        window = range(max(0, first - CONTEXT_LINES), min(len(lines), first + CONTEXT_LINES + 1))
    else:
        window = range(0, min(len(lines), 2 * CONTEXT_LINES + 1))
    context = []
    for index in window:
        mark = (index in failing and ">") or " "
        context.append("%s%5d %s" % (mark, index + 1, lines[index]))
    return context


def _drop_counters(own):
    """{direction: {'openflow': packets dropped by the VIF's closing flow}}."""
    counts = {}
    for cookie, table, packets, priority, match in own:
        if priority != openflow.PORT_PRIORITY:
            continue
        if table == openflow.ALLOW:
            counts["from_guest"] = {BACKEND_NAME: packets}
        elif table == openflow.EGRESS:
            counts["to_guest"] = {BACKEND_NAME: packets}
    return counts
