"""The Open vSwitch backend: the operations of engine.Engine, as OpenFlow flows.

What is wanted lives in the state directory (the same records as the bridge
backend); what is in force is the switch itself (its flows, by cookie). Every
change runs under the same lock and is one 'ovs-ofctl --bundle' transaction
per bridge: it swaps a VIF's flows atomically, so no frame passes while it
runs and a rejected flow leaves nothing half-done. A VIF's port is found by
name, on whatever bridge it is (one ovs-vsctl run reads every bridge, port
and port number at once). Flows whose cookie is not ours are never touched.
"""

from vifrules import openflow, policy
from vifrules.engine import sync_plan
from vifrules.compat import current_exception
from vifrules.errors import InvalidArgument, StateError
from vifrules.runner import Lock, locked, run
from vifrules.state import StateDir

OVS_VSCTL, OVS_OFCTL = "ovs-vsctl", "ovs-ofctl"
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

    def managed(self, trusted):
        """The bridges vif-rules keeps: those with a guest port or a trusted uplink."""
        result = []
        for name, (bridge, ofport) in self.where.items():
            if (name[:3] in GUEST_KINDS or name in trusted) and bridge not in result:
                result.append(bridge)
        result.sort()
        return result


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
        """One atomic change of a bridge's flows."""
        self._run([OVS_OFCTL, "--bundle", "add-flows", bridge, "-"], text)

    def _trusted(self, trusted=None):
        if trusted is not None:
            return trusted
        read = getattr(self.state, "read_trusted", None)  # the lead's record, if there
        if read is not None:
            recorded = read()
            if recorded is not None:
                return recorded
        return self.config.trusted_interfaces

    def _records(self):
        """[(VifName, Policy)] of every VIF on record, sorted; a record that
        cannot be read is left out (that VIF stays closed) and reported."""
        return [(vif, policy.guest_policy(nic))
                for vif, nic in self.state.readable(self.log_error)]

    def _host_flows(self, switch, bridge, trusted):
        return openflow.host_flows(switch.ports_on(bridge, trusted))

    def _members(self, switch, bridge, records):
        members = []
        for vif, guest in records:
            found = switch.port(vif.name)
            if found is not None and found[0] == bridge:
                members.append((found[1], guest))
        return members

    # ------------------------------------------------------------ one VIF

    def apply_vif(self, vif, nic):
        """Protect vif with the addresses of nic, replacing whatever it had."""
        return locked(self._lock(), self._apply_vif, vif, nic)

    def _apply_vif(self, vif, nic):
        try:
            previous = self.state.read(vif.name)
        except StateError:  # replaced below: what it said no longer matters
            self.log_error(current_exception())
            previous = None
        self.state.write(vif.name, nic)
        try:
            switch = self._switch()
            found = switch.port(vif.name)
            if found is None:
                self.log("%s is on no Open vSwitch bridge yet: its flows come with "
                         "its port (sync)" % vif)
            else:
                before = None
                if previous is not None:
                    before = policy.guest_policy(previous)
                self._swap(switch, found[0], found[1], vif, policy.guest_policy(nic), before)
        except Exception:
            # Fail closed: the guest keeps no access rather than a half state.
            self.state.remove(vif.name)
            self._remove_flows(vif, nic, best_effort=True)
            raise
        self.log("applied %s mac=%s ipv4=%s ipv6=%s (was %s)" % (
            vif, nic.mac, ",".join(nic.ipv4) or "-", ",".join(nic.ipv6) or "-",
            (previous and "protected") or "new"))
        return {"vif": vif.name, "replaced": previous is not None}

    def _swap(self, switch, bridge, ofport, vif, guest, before):
        """One transaction: vif's flows (none if guest is None), the bridge's
        host flows, and the delivery flows of the keys vif had (before) or
        has as the records now say."""
        keys = []
        for one in (guest, before):
            if one is not None:
                keys.extend(openflow.delivery_keys(one))
        entries = []
        if keys:
            entries = self._entries(switch, bridge, vif, guest or before)
        if guest is not None:
            entries.append((ofport, openflow.delivery_keys(guest)))
        text = openflow.vif_bundle(vif, ofport, guest,
                                   self._host_flows(switch, bridge, self._trusted()),
                                   openflow.shared_changes(keys, entries))
        self._transaction(bridge, text)

    def _entries(self, switch, bridge, vif, guest):
        """[(ofport, delivery keys)] of the VIFs on record on bridge, for the
        keys an event of vif touches. A key of vif's can be another's too:
        its own MAC is its twin's (vif and tap of one NIC), its IPv6 groups
        another IPv6 guest's, the DHCP broadcast everyone's. So only those
        records are read; of the others, their port is enough. (Two guests
        given one IPv4 address share its ARP key only after sync.)"""
        with_ipv6 = {}
        for other in self.state.names_with_ipv6():
            with_ipv6[other.name] = 1
        common = openflow.broadcast_keys(guest)
        entries = []
        for other in self.state.names():
            found = switch.port(other.name)
            if found is None or found[0] != bridge or other.name == vif.name:
                continue
            if other.name in with_ipv6 or (other.domid, other.devid) == (vif.domid, vif.devid):
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

    def teardown_vif(self, vif):
        return locked(self._lock(), self._teardown_vif, vif)

    def _teardown_vif(self, vif):
        try:
            known = self.state.read(vif.name)
        except StateError:  # removed below; its flows go by cookie all the same
            self.log_error(current_exception())
            known = None
        self.state.remove(vif.name)
        self._remove_flows(vif, known, best_effort=False)
        self.log("tore down %s%s" % (vif, (known is None and " (was not on record)") or ""))
        return {"vif": vif.name, "was_protected": known is not None}

    def _remove_flows(self, vif, known, best_effort):
        """vif's flows go from its bridge, or from every bridge of ours when
        its port is gone (its flows stay on the bridge it was on); known is
        its NicAddresses on record (None: not on record), whose delivery
        flows are rewritten without it."""
        before = None
        if known is not None:
            before = policy.guest_policy(known)
        try:
            switch = self._switch()
            found = switch.port(vif.name)
            if found is not None:
                bridges = [found[0]]
            else:
                bridges = switch.managed(self._trusted())
            for bridge in bridges:
                ofport = (found is not None and found[1]) or None
                self._swap(switch, bridge, ofport, vif, None, before)
        except Exception:
            if not best_effort:
                raise

    # ------------------------------------------------------------ the host

    def setup_host(self, trusted=None):
        """The pipeline plus every VIF on record on every bridge of ours; idempotent."""
        trusted = self._trusted(trusted)
        return locked(self._lock(), self._setup_host, trusted)

    def _setup_host(self, trusted):
        switch = self._switch()
        records = self._records()
        report, protected = {}, []
        for bridge in switch.managed(trusted):
            before = parse_flows(self._run([OVS_OFCTL, "dump-flows", bridge, "table=%d" % openflow.EGRESS])[1])
            members = self._members(switch, bridge, records)
            vif_flows, wanted = [], {}
            for vif, guest in records:
                found = switch.port(vif.name)
                if found is not None and found[0] == bridge:
                    vif_flows.append(openflow.vif_flows(vif, guest, found[1]))
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
                self._host_flows(switch, bridge, trusted), openflow.shared_flows(members),
                vif_flows))
            report["%s/%s" % (BACKEND_NAME, bridge)] = {"removed": removed, "hooked": []}
        protected.sort()
        write = getattr(self.state, "write_trusted", None)
        if write is not None:
            write(trusted)
        self.log("host flows in force on %s; trusted uplinks: %s" % (
            " ".join(switch.managed(trusted)) or "no bridge", " ".join(trusted) or "none"))
        return {"vifs": protected, "tables": report}

    def stop_host(self):
        """Remove every flow of ours: the bridges forward as without vif-rules."""
        return locked(self._lock(), self._stop_host)

    def _stop_host(self):
        for bridge in self._switch().bridges:
            self._transaction(bridge, openflow.delete_line(openflow.COOKIE_PREFIX,
                                                           openflow.COOKIE_MASK) + "\n")
        self.log("host flows removed: the forward path is OPEN")

    # ------------------------------------------------------------ reconciling

    def sync(self, running, trusted=None):
        """As engine.Engine.sync: running maps each running VIF's name to
        (VifName, NicAddresses or None); one transaction per bridge rebuilds
        all, so it also re-protects every VIF after a flush of the flows."""
        trusted = self._trusted(trusted)
        return locked(self._lock(), self._sync, running, trusted)

    def _sync(self, running, trusted):
        on_record = {}
        for vif, guest in self._records():
            on_record[vif.name] = (vif, guest.nic)
        plan = sync_plan(on_record, running)
        removed, applied = plan["removed"], plan["applied"]
        unchanged, without_data = plan["unchanged"], plan["without_data"]
        for name in removed:
            self.state.remove(name)
        for name in applied:
            self.state.write(name, plan["wanted"][name][1])
        result = self._setup_host(trusted)
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
        """What is in force, read from the switch: one dump per bridge of ours."""
        missing = []
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
        vifs = []
        for vif, guest in self._records():
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
            vifs.append(entry)
        from vifrules.vifpatch import hook_state
        return {"protected": not missing, "missing": missing, "trusted": trusted,
                "vifs": vifs, "hook": hook_state()}


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
