"""The operations: set up the host, apply and tear down one VIF, reconcile.

Every change runs under the lock and costs one batch-tool process per
netfilter family, whatever the number of addresses.
"""

import os

from vifrules import ruleset
from vifrules.errors import CommandFailed, HostNotReady
from vifrules.render import Batch, SavedTable, parse_save, restore_text
from vifrules.runner import Lock, locked, run, run_all
from vifrules.state import StateDir


class Engine(object):
    def __init__(self, config, log=None):
        self.config = config
        self.state = StateDir(config.state_dir)
        self.log = log or (lambda message: None)

    def families(self):
        return [f for f in ruleset.FAMILIES if self.config.enabled(f)]

    def _lock(self):
        return Lock(self.config.lock_file, self.config.lock_timeout)

    # ------------------------------------------------------------ running

    def _restore(self, family, batches):
        """One process per family: every table's commit in one input."""
        self._restore_families([(family, batches)])

    def _restore_families(self, changes, check=True):
        """[(family, batches)] -> one process per family, all at once (an
        event waits for the slowest family, not for their sum). Returns the
        families whose tool failed (with check, raises the first failure)."""
        commands, families = [], []
        for family, batches in changes:
            batches = [b for b in batches if not b.is_empty()]
            if batches:
                commands.append(([self.config.restore_tool(family), "--noflush"],
                                 restore_text(batches)))
                families.append(family)
        results = run_all(commands, check)
        return [family for family, result in zip(families, results) if result[0] != 0]

    def _save(self, family):
        """{table: SavedTable}; a table the dump leaves out reads as empty."""
        tables = parse_save(run([self.config.save_tool(family)])[1])
        for table in ruleset.TABLES[family]:
            tables.setdefault(table, SavedTable())
        return tables

    # ------------------------------------------------------------ one VIF

    def apply_vif(self, vif, nic):
        """Protect vif with the addresses of nic, replacing whatever it had."""
        return locked(self._lock(), self._apply_vif, vif, nic)

    def _apply_vif(self, vif, nic):
        previous = self.state.read(vif.name)
        members = _Members(self.state, vif)
        self.state.write(vif.name, nic)
        try:
            try:
                self._restore_families([
                    (family, self._apply_batches(family, vif, nic, previous, members))
                    for family in self.families()])
            except CommandFailed:
                # The base or a sibling chain is missing (a flush, a reboot
                # without host-rules): rebuild the whole host once.
                self.log("incremental apply of %s failed; reconciling the host" % vif)
                self._reconcile(self.config.trusted_interfaces)
        except Exception:
            # Fail closed: the guest keeps no access rather than a half state.
            self.state.remove(vif.name)
            self._teardown_chains(vif, nic, best_effort=True)
            raise
        self.log("applied %s mac=%s ipv4=%s ipv6=%s (was %s)" % (
            vif, nic.mac, ",".join(nic.ipv4) or "-", ",".join(nic.ipv6) or "-",
            previous and "protected" or "new"))
        return {"vif": vif.name, "replaced": previous is not None}

    def _apply_batches(self, family, vif, nic, previous, members):
        """The change for one family. A VIF new to the family's dispatch gets
        its chains created and its entries inserted (adding only); a VIF
        already in it gets its chains and its dispatch path rewritten; one
        that leaves it (no more IPv6) is torn down there."""
        wanted = ruleset.wants_chains(family, nic)
        had = previous is not None and ruleset.wants_chains(family, previous)
        if not (wanted or had):
            return []
        others = members[family]
        if not wanted:  # it had chains here and has none now
            return self._teardown_batches(family, vif, others, others + [vif], True, None)
        batches = []
        for table in ruleset.TABLES[family]:
            batch = Batch(family, table)
            chains = ruleset.vif_chains(family, table, vif, nic)
            if had:
                # Rewriting the path too makes a flushed trie fail loudly
                # (and be rebuilt) instead of leaving the chains unreachable.
                batch.chains = chains + ruleset.dispatch_path(
                    family, table, vif, others + [vif])[0]
            else:
                batch.new_chains, batch.inserts = ruleset.dispatch_insert(
                    family, table, vif, others)
                batch.new_chains = chains + batch.new_chains
            batches.append(batch)
        return batches

    def teardown_vif(self, vif):
        return locked(self._lock(), self._teardown_vif, vif)

    def _teardown_vif(self, vif):
        known = self.state.read(vif.name)
        self.state.remove(vif.name)
        self._teardown_chains(vif, known, best_effort=False)
        self.log("tore down %s%s" % (vif, (known is None and " (was not on record)") or ""))
        return {"vif": vif.name, "was_protected": known is not None}

    def _teardown_chains(self, vif, known, best_effort):
        """Remove vif from every family; known is its NicAddresses on record
        (None: it was not), which says in which tries it is."""
        members = _Members(self.state, vif)
        plans = []
        for family in self.families():
            remaining = members[family]
            was_member = known is not None and ruleset.wants_chains(family, known)
            before = list(remaining)
            if was_member:
                before.append(vif)
            plans.append((family, remaining, before, was_member))
        failed = self._restore_families([
            (family, self._teardown_batches(family, vif, remaining, before, was_member, None))
            for family, remaining, before, was_member in plans], check=False)
        for family, remaining, before, was_member in plans:
            if family not in failed:
                continue
            # The record and the kernel disagree: delete what is there.
            try:
                self._restore(family, self._teardown_batches(
                    family, vif, remaining, before, was_member, self._save(family)))
            except CommandFailed:
                if not best_effort:
                    raise

    def _teardown_batches(self, family, vif, remaining, before, was_member, saved):
        """Rewrite vif's trie path for the remaining VIFs and delete the chains
        that go: those the record says exist or, given saved, the kernel has."""
        batches = []
        for table in ruleset.TABLES[family]:
            batch = Batch(family, table)
            batch.chains, delete = ruleset.dispatch_path(family, table, vif, remaining)
            own = ruleset.vif_chain_names(family, table, vif.name)
            if saved is None:
                if not was_member:
                    continue  # nothing of vif is in this family's tables
                absent_before = ruleset.dispatch_path(family, table, vif, before)[1]
                delete = [name for name in delete if name not in absent_before]
                delete.extend(own)
            else:
                present = saved[table].chains
                delete = [name for name in delete + own if name in present]
                batch.chains = [_without_missing_targets(chain, present)
                                for chain in batch.chains if chain.name in present]
            batch.delete = delete
            batches.append(batch)
        return batches

    # ------------------------------------------------------------ the host

    def setup_host(self, trusted=None):
        """Default-drop host rules plus every VIF on record; idempotent."""
        if trusted is None:
            trusted = self.config.trusted_interfaces
        return locked(self._lock(), self._setup_host, trusted)

    def _setup_host(self, trusted):
        self._set_sysctls()
        result = self._reconcile(trusted)
        if self.config.enabled("arptables"):
            self._setup_arptables(trusted)
        self.log("host rules in force; trusted uplinks: %s" % (" ".join(trusted) or "none"))
        return result

    def _set_sysctls(self):
        base = self.config.get("PROC_SYS")
        for name in ruleset.host_sysctls():
            path = os.path.join(base, name)
            if not os.path.exists(path):
                raise HostNotReady(path, "load the bridge module (modprobe bridge; "
                                   "br_netfilter on kernels from 3.18)")
            handle = open(path, "w")
            try:
                handle.write("1\n")
            finally:
                handle.close()

    def _reconcile(self, trusted):
        """Write the whole desired state in one batch per family; remove our
        chains that are not desired (stale guests, old trie nodes)."""
        vifs = self.state.names()
        nics = {}
        for vif in vifs:
            nics[vif.name] = self.state.read(vif.name)
        vifs = [v for v in vifs if nics[v.name] is not None]
        report = {}
        for family in self.families():
            saved = self._save(family)
            batches = []
            for table in ruleset.TABLES[family]:
                batch = self._desired_table(family, table, trusted, vifs, nics, saved[table])
                batches.append(batch)
                report["%s/%s" % (family, table)] = {
                    "removed": batch.delete,
                    "hooked": ["%s->%s" % j for j in batch.insert_jumps]}
            self._restore(family, batches)
        return {"vifs": [v.name for v in vifs], "tables": report}

    def _desired_table(self, family, table, trusted, vifs, nics, saved):
        members = [v for v in vifs if ruleset.wants_chains(family, nics[v.name])]
        batch = Batch(family, table)
        batch.chains = ruleset.host_chains(family, table, trusted)
        batch.chains.extend(ruleset.dispatch_tree(family, table, members))
        for vif in members:
            batch.chains.extend(ruleset.vif_chains(family, table, vif, nics[vif.name]))
        wanted = {}
        for chain in batch.chains:
            wanted[chain.name] = 1
        batch.delete = [name for name in saved.chains
                        if ruleset.is_our_chain(name) and name not in wanted]
        batch.delete.sort()
        batch.policies = ruleset.builtin_policies(family, table)
        for hook in ruleset.builtin_hooks(family, table):
            if hook not in saved.jumps:
                batch.insert_jumps.append(hook)
        return batch

    def _setup_arptables(self, trusted):
        tool = self.config.tool("arptables")
        listing = run([tool, "-L", "-n"])[1]
        present = {}
        for line in listing.splitlines():
            if line.startswith("Chain "):
                present[line.split()[1]] = 1
        for name in (ruleset.BASE_FORWARD, ruleset.PORTS_OUT):
            if name not in present:
                run([tool, "-N", name])
        for command in ruleset.arptables_commands(trusted):
            run([tool] + list(command))
        forward = run([tool, "-L", "FORWARD", "-n"])[1]
        if ("-j " + ruleset.BASE_FORWARD) not in forward:
            run([tool, "-I", "FORWARD", "1", "-j", ruleset.BASE_FORWARD])

    def _arptables_missing(self):
        status, listing = run([self.config.tool("arptables"), "-L", "FORWARD", "-n"],
                              check=False)[:2]
        if status != 0:
            return ["arptables: cannot read the FORWARD chain"]
        missing = []
        if "(policy DROP" not in listing.split("\n")[0]:
            missing.append("arptables: FORWARD policy is not DROP")
        if ("-j " + ruleset.BASE_FORWARD) not in listing:
            missing.append("arptables: no jump FORWARD -> " + ruleset.BASE_FORWARD)
        return missing

    def stop_host(self):
        """Remove every rule of ours and open the forward path again."""
        return locked(self._lock(), self._stop_host)

    def _stop_host(self):
        for family in self.families():
            saved = self._save(family)
            batches = []
            for table in ruleset.TABLES[family]:
                batch = Batch(family, table)
                for builtin in ruleset.builtin_policies(family, table):
                    batch.policies[builtin] = "ACCEPT"
                batch.remove_jumps = [j for j in saved[table].jumps
                                      if ruleset.is_our_chain(j[1])
                                      and not ruleset.is_our_chain(j[0])]
                batch.delete = [n for n in saved[table].chains if ruleset.is_our_chain(n)]
                batch.delete.sort()
                batches.append(batch)
            self._restore(family, batches)
        if self.config.enabled("arptables"):
            tool = self.config.tool("arptables")
            run([tool, "-P", "FORWARD", "ACCEPT"])
            while run([tool, "-D", "FORWARD", "-j", ruleset.BASE_FORWARD], check=False)[0] == 0:
                pass
            for name in (ruleset.BASE_FORWARD, ruleset.PORTS_OUT):
                run([tool, "-F", name], check=False)
            for name in (ruleset.BASE_FORWARD, ruleset.PORTS_OUT):
                run([tool, "-X", name], check=False)
        self.log("host rules removed: the forward path is OPEN")

    # ------------------------------------------------------------ reconciling

    def sync(self, running, trusted=None):
        """Make the host match the VIFs that really run here.

        running maps each running VifName's name to (VifName, NicAddresses or
        None when no data is known): VIFs on record that do not run are
        removed; a running VIF without new data keeps the data on record, or
        stays closed if there is none. One batch per family rebuilds all.
        """
        if trusted is None:
            trusted = self.config.trusted_interfaces
        return locked(self._lock(), self._sync, running, trusted)

    def _sync(self, running, trusted):
        removed = []
        for vif in self.state.names():
            if vif.name not in running:
                self.state.remove(vif.name)
                removed.append(vif.name)
        applied, unchanged, without_data = [], [], []
        names = list(running.keys())
        names.sort()
        for name in names:
            vif, nic = running[name]
            known = self.state.read(name)
            if nic is None:
                if known is None:
                    without_data.append(name)
                else:
                    unchanged.append(name)
                continue
            if known == nic:
                unchanged.append(name)
            else:
                self.state.write(name, nic)
                applied.append(name)
        result = self._setup_host(trusted)
        removed_chains = []
        for report in result["tables"].values():
            removed_chains.extend(report["removed"])
        self.log("sync: removed %s; applied %s; unchanged %d; without data %s" % (
            ",".join(removed) or "-", ",".join(applied) or "-", len(unchanged),
            ",".join(without_data) or "-"))
        return {"removed": removed, "applied": applied, "unchanged": unchanged,
                "without_data": without_data, "removed_chains": removed_chains,
                "protected": result["vifs"]}

    # ------------------------------------------------------------ reporting

    def status(self):
        """What is in force: the host's verdict ('protected'), what is missing,
        and each VIF on record with its addresses and drop counters. One
        'save -c' per family, whatever the number of VIFs."""
        missing = []
        dumps = {}
        nics = []
        for vif in ruleset.sorted_vifs(self.state.names()):
            nic = self.state.read(vif.name)
            if nic is not None:
                nics.append((vif, nic))
        for family in self.families():
            status, text = run([self.config.save_tool(family), "-c"], check=False)[:2]
            if status != 0:
                missing.append("%s: cannot read the tables" % family)
                continue
            dumps[family] = text
            saved = parse_save(text)
            members = [vif for vif, nic in nics if ruleset.wants_chains(family, nic)]
            for table in ruleset.TABLES[family]:
                missing.extend(self._table_missing(family, table,
                                                   saved.get(table, SavedTable()), members))
        if self.config.enabled("arptables"):
            missing.extend(self._arptables_missing())
        base = self.config.get("PROC_SYS")
        for name in ruleset.host_sysctls():
            value = _read_first_line(os.path.join(base, name))
            if value != "1":
                missing.append("sysctl %s is %s, not 1" % (name.replace("/", "."), value))
        vifs = []
        for vif, nic in nics:
            entry = nic.to_dict()
            entry["vif"] = vif.name
            entry["dropped"] = _drop_counters(dumps, vif.name)
            vifs.append(entry)
        return {"protected": not missing, "missing": missing,
                "trusted": self.config.trusted_interfaces, "vifs": vifs}

    def _table_missing(self, family, table, saved, members):
        missing = []
        for builtin, policy in ruleset.builtin_policies(family, table).items():
            actual = saved.chains.get(builtin, "?")
            if actual != policy:
                missing.append("%s/%s: %s policy is %s, not %s" % (
                    family, table, builtin, actual, policy))
        for hook in ruleset.builtin_hooks(family, table):
            if hook not in saved.jumps:
                missing.append("%s/%s: no jump %s -> %s" % (family, table, hook[0], hook[1]))
        for vif in members:
            for name in ruleset.vif_chain_names(family, table, vif.name):
                if name not in saved.chains:
                    missing.append("%s/%s: %s is on record but chain %s is gone"
                                   % (family, table, vif, name))
        return missing


def _drop_counters(dumps, vif_name):
    """{direction: {family: packets dropped by the VIF's closing rule}}."""
    counts = {}
    labels = {ruleset.FROM: "from_guest", ruleset.TO: "to_guest"}
    for family, text in dumps.items():
        for table in ruleset.TABLES[family]:
            for name in ruleset.vif_chain_names(family, table, vif_name):
                direction = name[2]
                packets = _final_drop_packets(text, name)
                if packets is not None:
                    counts.setdefault(labels[direction], {})[family] = packets
    return counts


def _without_missing_targets(chain, present):
    """chain without the jumps to chains the kernel does not have."""
    rules = [rule for rule in chain.rules
             if not (ruleset.is_our_chain(rule[-1]) and rule[-1] not in present)]
    return ruleset.Chain(chain.name, rules)


def _final_drop_packets(save_text, chain):
    """Packets counted by the closing '-j DROP' of chain in a 'save -c' dump."""
    wanted = "-A %s -j DROP" % chain
    for line in save_text.splitlines():
        line = line.strip()
        if line.endswith(wanted) and line.startswith("["):
            return int(line[1:line.index(":")])
        if line.startswith(wanted) and " -c " in line:
            return int(line.split(" -c ")[1].split()[0])
    return None


def _read_first_line(path):
    try:
        handle = open(path)
    except IOError:
        return "missing"
    try:
        return handle.readline().strip()
    finally:
        handle.close()


class _Members(object):
    """family -> the VIFs on record in that family's dispatch, vif left out;
    each list read from the state directory once, when first needed."""

    def __init__(self, state, vif):
        self.state = state
        self.vif = vif
        self.lists = {}

    def __getitem__(self, family):
        if family == "ip6tables":
            which, read = "ipv6", self.state.names_with_ipv6
        else:
            which, read = "all", self.state.names
        if which not in self.lists:
            self.lists[which] = [v for v in read() if v.name != self.vif.name]
        return self.lists[which]
