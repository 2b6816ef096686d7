"""The operations: set up the host, apply and tear down one VIF, reconcile.

Every change runs under the lock and costs one batch-tool process per
netfilter family, whatever the number of addresses.

What is wanted lives in the state directory, what is in force in the kernel
(see state.py). Each operation marks what it is about to change before it
touches the kernel and clears the mark once the kernel has it; an operation
that finds a mark left behind rebuilds the host from the records first
(redo), so a failure or a kill at any point converges on the next call.
Teardown needs only the VIF's name: it removes what the kernel holds.
"""

from vifrules import fs, ruleset
from vifrules.compat import current_exception
from vifrules.errors import CommandFailed, HostNotReady, StateError, VifRulesError
from vifrules.log import left_to_finish
from vifrules.render import Batch, SavedTable, parse_save, restore_text
from vifrules.lock import Lock, locked
from vifrules.runner import failure, run, run_all
from vifrules.state import GROUP, HOST, StateDir

CONTEXT_LINES = 5  # restore input lines logged on each side of a failing one


class Engine(object):
    def __init__(self, config, log=None, log_error=None):
        self.config = config
        self.state = StateDir(config.state_dir)
        self.log = log or (lambda message: None)
        self.log_error = log_error or (lambda error: None)

    def families(self):
        return [f for f in ruleset.FAMILIES if self.config.enabled(f)]

    def _lock(self):
        return Lock(self.config.lock_file, self.config.lock_timeout)

    # ------------------------------------------------------------ running

    def _run(self, argv, stdin_text=None, check=True):
        return run(argv, stdin_text, check, self.config.command_timeout)

    def _restore_families(self, changes, check=True):
        """[(family, batches)] -> one process per family, all at once (an
        event waits for the slowest family, not for their sum). Returns
        {family: CommandFailed} for the families whose tool failed (with
        check, raises the first)."""
        commands, families, texts = [], [], []
        for family, batches in changes:
            batches = [b for b in batches if not b.is_empty()]
            if batches:
                text = restore_text(batches)
                commands.append(([self.config.restore_tool(family), "--noflush"], text))
                families.append(family)
                texts.append(text)
        results = run_all(commands, False, self.config.command_timeout)
        failures = {}
        for family, text, command, result in zip(families, texts, commands, results):
            if result[0] != 0:
                failures[family] = _restore_failure(command[0], text, result,
                                                    self.config.command_timeout)
        if check and failures:
            raise failures[families[[f in failures for f in families].index(True)]]
        return failures

    def _save_families(self, families):
        """{family: {table: SavedTable}}, one save process per family, all at
        once; a family whose dump fails or is not a dump is left out, its
        error in the second value."""
        commands = [([self.config.save_tool(family)], None) for family in families]
        results = run_all(commands, False, self.config.command_timeout)
        saved, failures = {}, {}
        for family, command, result in zip(families, commands, results):
            try:
                if result[0] != 0:
                    raise failure(command[0], result, self.config.command_timeout)
                saved[family] = _parse_dump(family, command[0], result[1])
            except VifRulesError:
                failures[family] = current_exception()
        return saved, failures

    def _save(self, family):
        saved, failures = self._save_families([family])
        if failures:
            raise failures[family]
        return saved[family]

    def _trusted(self, trusted=None):
        """The uplinks to trust: as given, else as last put in force, else as
        configured."""
        if trusted is not None:
            return trusted
        recorded = self.state.read_trusted()
        if recorded is not None:
            return recorded
        return self.config.trusted_interfaces

    def _repair(self, left_behind, exclude=()):
        """Redo: rebuild from the records what unfinished operations may
        have left half done (the whole host if one of them was host-wide)."""
        self.log("repairing after an unfinished operation on %s" % ", ".join(left_behind))
        if HOST in left_behind:
            return self._setup_host(None, self._wanted(exclude))
        return self._reconcile(self._trusted(), exclude)

    def _left_behind(self):
        """Marks of operations that did not finish: the kernel may not match
        the records for them."""
        return self.state.pending()

    # ------------------------------------------------------------ one VIF

    def apply_vif(self, vif, nic):
        """Protect vif with the addresses of nic, replacing whatever it had.
        Handed over to whoever holds the lock (group commit)."""
        from vifrules import handover
        return handover.submit(self.config, handover.Change(handover.APPLY, vif, nic),
                              lambda: self)

    def _apply_vif(self, vif, nic):
        left_behind = self._left_behind()
        self.state.mark_pending(vif.name)  # fails before anything changed
        try:
            previous = self.state.read(vif.name)
        except StateError:
            self.log_error(current_exception())
            previous, left_behind = None, left_behind + [vif.name]
        self.state.write(vif.name, nic)
        try:
            if left_behind:
                self._repair(left_behind)
            else:
                try:
                    listed = {}
                    self._restore_families([
                        (family, self._apply_batches(family, vif, nic, previous, listed))
                        for family in self.families()])
                except CommandFailed:
                    # The base or a sibling chain is missing (a flush, a reboot
                    # without host-rules): rebuild the whole host once.
                    self.log("incremental apply of %s failed; reconciling the host" % vif)
                    self._reconcile(self._trusted())
        except VifRulesError:
            self._fail_closed(vif)
            raise
        self.state.clear_pending(left_behind + [vif.name])
        self.log("applied %s mac=%s ipv4=%s ipv6=%s (was %s)" % (
            vif, nic.mac, ",".join(nic.ipv4) or "-", ",".join(nic.ipv6) or "-",
            previous and "protected" or "new"))
        return {"vif": vif.name, "replaced": previous is not None}

    def _fail_closed(self, vif):
        """After a failed apply: the guest keeps no access rather than a half
        state. Its record goes, then whatever the kernel holds of it; the
        mark stays unless that worked, so the next operation finishes it."""
        self.log("apply of %s failed: removing its rules (fail closed)" % vif)
        try:
            self.state.remove(vif.name)
            self._remove_from_kernel(vif)
        except VifRulesError:
            left_to_finish(self.log, self.log_error, "fail-closed teardown of %s" % vif,
                           current_exception())
            return
        self.state.clear_pending([vif.name])

    def _apply_batches(self, family, vif, nic, previous, listed):
        """The change for one family, computed from the records (they match
        the kernel while no mark is left). A VIF new to the family's dispatch
        gets its chains created and its entries inserted (adding only); a VIF
        already in it gets its chains and its dispatch path rewritten; one
        that leaves it (no more IPv6) is torn down there."""
        wanted = ruleset.wants_chains(family, nic)
        had = previous is not None and ruleset.wants_chains(family, previous)
        if not (wanted or had):
            return []
        others = self._members(family, vif, listed)
        if not wanted:  # it had chains here and has none now
            return self._teardown_batches(family, vif, others, others + [vif])
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

    def _members(self, family, vif, listed=None):
        """The VIFs on record in family's dispatch, vif left out. listed (a
        dict kept for one operation) holds each directory's listing, read
        once: an event parses every name on record, once."""
        which = (family == "ip6tables" and "ipv6") or "all"
        if listed is None:
            listed = {}
        if which not in listed:
            if which == "ipv6":
                listed[which] = self.state.names_with_ipv6()
            else:
                listed[which] = self.state.names()
        return [v for v in listed[which] if v.name != vif.name]

    def teardown_vif(self, vif):
        from vifrules import handover
        return handover.submit(self.config, handover.Change(handover.TEARDOWN, vif),
                              lambda: self)

    # ------------------------------------------------------------ group commit

    def commit_changes(self, changes):
        """Under the lock (vifrules.handover): commit handover.Change's in
        their order, [outcome] in that order. The VIF events between two
        syncs go together, one restore per family for all; a sync rebuilds
        the host between them."""
        from vifrules.handover import in_order
        return in_order(changes, self._commit_events, self._one_change)

    def _commit_events(self, changes):
        """VIF events together; if the group fails in the kernel, each change
        is retried alone, so one bad VIF fails alone and the others are
        still protected."""
        from vifrules.handover import outcome_of
        if len(changes) == 1:
            return [outcome_of(self._one_change, changes[0])]
        previous = {}
        for change in changes:
            if change.vif.name not in previous:
                try:
                    previous[change.vif.name] = self.state.read(change.vif.name)
                except StateError:
                    self.log_error(current_exception())
                    previous[change.vif.name] = None
        try:
            return [{"result": result}
                    for result in self._commit_together(changes, previous)]
        except VifRulesError:
            error = current_exception()
            self.log_error(error)
        for name, nic in previous.items():  # back to what was wanted before
            if nic is None:
                self.state.remove(name)
            else:
                self.state.write(name, nic)
        culprit = _culprit(error, previous.keys())
        outcomes = [None] * len(changes)
        if culprit is not None:
            # The tool named the line that failed: the others go again
            # together (one extra commit), the culprit alone after them.
            self.log("group commit failed on %s: the other changes go again together"
                     % culprit)
            rest = [i for i, c in enumerate(changes) if c.vif.name != culprit]
            others = dict([(n, nic) for n, nic in previous.items() if n != culprit])
            try:
                results = self._commit_together([changes[i] for i in rest], others)
                for i, result in zip(rest, results):
                    outcomes[i] = {"result": result}
            except VifRulesError:
                self.log_error(current_exception())
                for name, nic in others.items():
                    if nic is None:
                        self.state.remove(name)
                    else:
                        self.state.write(name, nic)
        else:
            self.log("group commit of %d changes failed: each is retried alone" % len(changes))
        for i, change in enumerate(changes):
            if outcomes[i] is None:
                outcomes[i] = outcome_of(self._one_change, change)
        return outcomes

    def _one_change(self, change):
        from vifrules.handover import APPLY, SYNC
        if change.kind == APPLY:
            return self._apply_vif(change.vif, change.nic)
        if change.kind == SYNC:
            return self._sync(change.running, change.trusted)
        return self._teardown_vif(change.vif)

    def _commit_together(self, changes, previous):
        from vifrules.handover import APPLY, end_state
        left_behind = self._left_behind()
        names = list(previous.keys())
        self.state.mark_pending(GROUP)  # one mark for all: a file each costs a commit's time
        results, wanted = end_state(changes, previous)[:2]
        for name in names:
            if wanted[name] is None:
                self.state.remove(name)
            else:
                self.state.write(name, wanted[name])
        once = len(names) == len(changes)  # no VIF twice in the group
        arriving = [c for c in changes if c.kind == APPLY and previous[c.vif.name] is None]
        leaving = [c.vif for c in changes if c.kind != APPLY]
        if left_behind or not once:
            self._repair(left_behind + names)
        elif len(arriving) == len(changes):
            # A boot storm: VIFs new to the host, inserted as one event inserts
            # them (adding only), all in one restore per family. If the kernel
            # refuses it, commit_changes sets the failing VIF apart.
            listed = {}
            self._restore_families([
                (family, self._arrival_batches(family, arriving, names, listed))
                for family in self.families()])
        elif len(leaving) == len(changes):
            self._remove_from_kernel(leaving)
        else:
            self._reconcile(self._trusted())
        self.state.clear_pending(left_behind + [GROUP])
        self.log("group commit: %d changes of %d VIFs in one restore per family" % (
            len(changes), len(names)))
        return results

    def _arrival_batches(self, family, arriving, names, listed):
        """Each arriving VIF's chains and dispatch entries, inserted in turn
        against the set as it grows, as one batch per table: inserts come
        after every chain's rules, each where a full rewrite puts it."""
        group = {}
        for name in names:
            group[name] = 1
        members = [v for v in self._members(family, arriving[0].vif, listed)
                   if v.name not in group]
        arriving = [c for c in arriving if ruleset.wants_chains(family, c.nic)]
        batches = []
        for table in ruleset.TABLES[family]:
            if not arriving:
                break
            batch = Batch(family, table)
            inserted = ruleset.dispatch_inserts(family, table, members,
                                                [c.vif for c in arriving])
            for change, (new_chains, inserts) in zip(arriving, inserted):
                batch.new_chains.extend(
                    ruleset.vif_chains(family, table, change.vif, change.nic) + new_chains)
                batch.inserts.extend(inserts)
            batches.append(batch)
        return batches

    def _teardown_vif(self, vif):
        """Remove every rule of vif in every family, whatever the records
        say; success only once the kernel holds nothing of it."""
        left_behind = self._left_behind()
        state_error = None
        try:
            self.state.mark_pending(vif.name)
        except StateError:
            state_error = current_exception()
        previous = None
        try:
            previous = self.state.read(vif.name)
            known = previous is not None
        except StateError:
            self.log_error(current_exception())
            known = True  # unreadable, so it was protected: it goes all the same
        try:
            self.state.remove(vif.name)
        except StateError:
            state_error = current_exception()
        if left_behind or state_error is not None:
            present = vif.name in self._repair(left_behind or [vif.name], [vif.name])["present"]
        elif previous is not None:
            present = self._remove_as_recorded(vif, previous)
        else:
            present = self._remove_from_kernel(vif)
        if state_error is not None:
            raise state_error  # the rules are gone, but the record says otherwise
        self.state.clear_pending(left_behind + [vif.name])
        self.log("tore down %s%s" % (vif, ((known or present) and " ") or
                                     " (was not on record)"))
        return {"vif": vif.name, "was_protected": known or present}

    def _remove_as_recorded(self, vif, nic):
        """Teardown computed from vif's record, as an apply computes its
        change (while no mark is left the records are what the kernel holds;
        no dump to read and parse). If the kernel disagrees (a chain gone: a
        flush), what it holds of vif is removed instead."""
        listed, changes = {}, []
        for family in self.families():
            if ruleset.wants_chains(family, nic):
                others = self._members(family, vif, listed)
                changes.append((family, self._teardown_batches(
                    family, vif, others, others + [vif])))
        try:
            self._restore_families(changes)
        except CommandFailed:
            self.log("teardown of %s as recorded failed; removing what the kernel "
                     "holds of it" % vif)
            self._remove_from_kernel(vif)
        return True

    def _remove_from_kernel(self, vifs):
        """Delete what the kernel holds of the VIFs (one, or a list) in every
        family and rewrite their dispatch paths for the VIFs on record; True
        if it held anything. Every family is tried; the first failure is
        raised after."""
        if not isinstance(vifs, list):
            vifs = [vifs]
        families = self.families()
        saved, failures = self._save_families(families)
        changes, present, listed = [], False, {}
        for family in families:
            if family not in saved:
                continue
            batches = self._removal_batches(family, vifs, saved[family], listed)
            for batch in batches:
                present = present or bool(batch.delete)
            changes.append((family, batches))
        failures.update(self._restore_families(changes, check=False))
        for family in families:
            if family in failures:
                raise failures[family]
        return present

    def _removal_batches(self, family, vifs, saved, listed):
        """The chains of vifs the kernel holds, deleted, and their dispatch
        paths rewritten (each chain once) for the VIFs left on record."""
        gone = {}
        for vif in vifs:
            gone[vif.name] = 1
        remaining = [v for v in self._members(family, vifs[0], listed) if v.name not in gone]
        batches = []
        for table in ruleset.TABLES[family]:
            present = saved[table].chains
            batch = Batch(family, table)
            written, delete = {}, []
            for vif in vifs:
                path, vanish = ruleset.dispatch_path(family, table, vif, remaining)
                for chain in path:
                    if chain.name in present and chain.name not in written:
                        written[chain.name] = 1
                        batch.chains.append(_without_missing_targets(chain, present))
                for name in vanish + ruleset.vif_chain_names(family, table, vif.name):
                    if name in present and name not in delete:
                        delete.append(name)
            batch.delete = delete
            batches.append(batch)
        return batches

    def _teardown_batches(self, family, vif, remaining, before):
        """From the records: rewrite vif's trie path for the remaining VIFs
        and delete its chains and the nodes that go (before: the set with
        vif), for a VIF that leaves one family's dispatch on a re-apply."""
        batches = []
        for table in ruleset.TABLES[family]:
            batch = Batch(family, table)
            batch.chains, delete = ruleset.dispatch_path(family, table, vif, remaining)
            absent_before = ruleset.dispatch_path(family, table, vif, before)[1]
            batch.delete = [name for name in delete if name not in absent_before]
            batch.delete.extend(ruleset.vif_chain_names(family, table, vif.name))
            batches.append(batch)
        return batches

    # ------------------------------------------------------------ the host

    def setup_host(self, trusted=None):
        """Default-drop host rules plus every VIF on record; idempotent.
        trusted (None: as last put in force, else as configured) is recorded
        and stays in force for later rebuilds."""
        return locked(self._lock(), self._setup_host, trusted)

    def _setup_host(self, trusted, wanted=None):
        trusted = self._trusted(trusted)
        left_behind = self._left_behind()
        self.state.mark_pending(HOST)
        self.state.write_trusted(trusted)
        # Fail closed: whatever fails, every family that can be set gets its
        # default DROP, and the error names every part that failed.
        failures = {}
        if self.config.enabled("arptables"):
            # First, so that no ARP path is open while the rest is set.
            try:
                self._run([self.config.tool("arptables"), "-P", "FORWARD", "DROP"])
            except VifRulesError:
                failures["arptables"] = current_exception()
        result = self._reconcile(trusted, wanted=wanted, check=False)
        failures.update(result["failures"])
        for family in result["failures"].keys():
            self._drop_policies(family)
        if self.config.enabled("arptables") and "arptables" not in failures:
            try:
                self._setup_arptables(trusted)
            except VifRulesError:
                failures["arptables"] = current_exception()
        try:
            self._set_sysctls()
        except VifRulesError:
            failures["sysctl"] = current_exception()
        if failures:
            names = list(failures.keys())
            names.sort()
            if len(names) == 1:
                raise failures[names[0]]  # the edge reports it, once
            for name in names:
                self.log_error(failures[name])  # the parts, with their context
            raise CommandFailed("host rules: %s failed" % ", ".join(names), "1",
                                "; ".join([failures[name].message() for name in names]))
        self.state.clear_pending(left_behind + [HOST])
        self.log("host rules in force; trusted uplinks: %s" % (" ".join(trusted) or "none"))
        return result

    def _drop_policies(self, family):
        """A family whose full rebuild failed still gets its default DROP."""
        batches = []
        for table in ruleset.TABLES[family]:
            batch = Batch(family, table)
            batch.policies = ruleset.builtin_policies(family, table)
            batches.append(batch)
        try:
            self._restore_families([(family, batches)])
            return
        except VifRulesError:
            self.log_error(current_exception())
        # The restore tool is what fails: the plain tool may still work.
        for batch in batches:
            for builtin, policy in batch.policies.items():
                try:
                    self._run([self.config.tool(family), "-t", batch.table, "-P",
                               builtin, policy])
                except VifRulesError:
                    self.log_error(current_exception())

    def _set_sysctls(self):
        base = self.config.get("PROC_SYS")
        for name in ruleset.host_sysctls():
            path = fs.join(base, name)
            if not fs.exists(path):
                raise HostNotReady(path, "load the bridge module (modprobe bridge; "
                                   "br_netfilter on kernels from 3.18)")
            try:
                handle = open(path, "w")
                try:
                    handle.write("1\n")
                finally:
                    handle.close()
            except IOError:
                raise HostNotReady(path, "cannot be set: %s" % current_exception())

    def _wanted(self, exclude=()):
        """{name: (VifName, NicAddresses)} of the records; a record that
        cannot be read is not wanted (its guest stays closed) and logged."""
        wanted = {}
        for vif, nic in self.state.readable(self.log_error):
            if vif.name not in exclude:
                wanted[vif.name] = (vif, nic)
        return wanted

    def _reconcile(self, trusted, exclude=(), wanted=None, check=True):
        """Write the whole desired state in one batch per family; remove our
        chains that are not desired (stale guests, old trie nodes, what a
        dead operation left). Returns the report, the names whose chains the
        kernel held before ('present') and, without check, the failures."""
        if wanted is None:
            wanted = self._wanted(exclude)
        names = list(wanted.keys())
        vifs = ruleset.sorted_vifs([wanted[name][0] for name in names])
        nics = {}
        for name in names:
            nics[name] = wanted[name][1]
        families = self.families()
        saved, failures = self._save_families(families)
        report, changes, present = {}, [], {}
        for family in families:
            if family not in saved:
                continue
            batches = []
            for table in ruleset.TABLES[family]:
                held = saved[family][table]
                batch = self._desired_table(family, table, trusted, vifs, nics, held)
                batches.append(batch)
                report["%s/%s" % (family, table)] = {
                    "removed": batch.delete,
                    "hooked": ["%s->%s" % j for j in batch.insert_jumps]}
                for chain in held.chains:
                    if chain[:4] in ("VRF-", "VRT-"):
                        present[chain[4:]] = 1
            changes.append((family, batches))
        failures.update(self._restore_families(changes, check=False))
        if check and failures:
            for family in families:
                if family in failures:
                    raise failures[family]
        return {"vifs": [v.name for v in vifs], "tables": report,
                "present": present, "failures": failures}

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
            count = saved.jumps.count(hook)
            if count == 0:
                batch.insert_jumps.append(hook)
            # A jump twice over (someone's restore, a garbled dump once) goes.
            batch.remove_jumps.extend([hook] * (count - 1))
        return batch

    def _arptables_listing(self):
        """'arptables -L -n', refused unless it reads as a listing."""
        argv = [self.config.tool("arptables"), "-L", "-n"]
        listing = self._run(argv)[1]
        lines = [line for line in listing.splitlines() if line.strip()]
        if not lines or not lines[0].startswith("Chain "):
            raise CommandFailed(" ".join(argv), "0", "output is not an arptables listing: "
                                + listing.strip()[:200])
        return listing

    def _arptables_jumps(self):
        return [rule for rule in _arptables_chain(self._arptables_listing(), "FORWARD")
                if rule == "-j " + ruleset.BASE_FORWARD]

    def _setup_arptables(self, trusted):
        tool = self.config.tool("arptables")
        listing = self._arptables_listing()
        present = {}
        for line in listing.splitlines():
            if line.startswith("Chain "):
                present[line.split()[1]] = 1
        for name in (ruleset.BASE_FORWARD, ruleset.PORTS_OUT):
            if name not in present:
                self._run([tool, "-N", name])
        for command in ruleset.arptables_commands(trusted):
            self._run([tool] + list(command))
        jumps = self._arptables_jumps()
        if not jumps:
            self._run([tool, "-I", "FORWARD", "1", "-j", ruleset.BASE_FORWARD])
        for extra in jumps[1:]:
            self._run([tool, "-D", "FORWARD", "-j", ruleset.BASE_FORWARD])

    def _arptables_missing(self, trusted):
        try:
            listing = self._arptables_listing()
        except VifRulesError:
            return ["arptables: cannot read the tables"]
        missing = []
        if "Chain FORWARD (policy DROP" not in listing:
            missing.append("arptables: FORWARD policy is not DROP")
        if "-j " + ruleset.BASE_FORWARD not in _arptables_chain(listing, "FORWARD"):
            missing.append("arptables: no jump FORWARD -> " + ruleset.BASE_FORWARD)
        wanted = {}
        for command in ruleset.arptables_commands(trusted):
            if command[0] == "-A":
                wanted.setdefault(command[1], []).append(command[2:])
        for chain, rules in wanted.items():
            held = [rule.split() for rule in _arptables_chain(listing, chain)]
            for rule in rules:
                words = list(rule)
                if not [h for h in held if _same_words(h, words)]:
                    missing.append("arptables: %s lacks '%s'" % (chain, " ".join(words)))
        return missing

    def stop_host(self):
        """Remove every rule of ours and open the forward path again."""
        return locked(self._lock(), self._stop_host)

    def _stop_host(self):
        self.state.mark_pending(HOST)
        families = self.families()
        saved, failures = self._save_families(families)
        changes = []
        for family in families:
            if family not in saved:
                continue
            batches = []
            for table in ruleset.TABLES[family]:
                held = saved[family][table]
                batch = Batch(family, table)
                for builtin in ruleset.builtin_policies(family, table):
                    batch.policies[builtin] = "ACCEPT"
                batch.remove_jumps = [j for j in held.jumps
                                      if ruleset.is_our_chain(j[1])
                                      and not ruleset.is_our_chain(j[0])]
                batch.delete = [n for n in held.chains if ruleset.is_our_chain(n)]
                batch.delete.sort()
                batches.append(batch)
            changes.append((family, batches))
        failures.update(self._restore_families(changes, check=False))
        if self.config.enabled("arptables"):
            tool = self.config.tool("arptables")
            self._run([tool, "-P", "FORWARD", "ACCEPT"])
            # As many deletions as the listing shows jumps: a tool that says
            # yes and does nothing must not keep us here.
            for jump in self._arptables_jumps():
                self._run([tool, "-D", "FORWARD", "-j", ruleset.BASE_FORWARD])
            if self._arptables_jumps():
                raise CommandFailed(" ".join([tool, "-D", "FORWARD", "-j",
                                              ruleset.BASE_FORWARD]), "0",
                                    "the jump is still listed after its deletion")
            ours = (ruleset.BASE_FORWARD, ruleset.PORTS_OUT)
            listed = [n for n in ours if _arptables_has_chain(self._arptables_listing(), n)]
            for name in listed:
                self._run([tool, "-F", name])
            for name in listed:
                self._run([tool, "-X", name])
            left = [n for n in ours if _arptables_has_chain(self._arptables_listing(), n)]
            if left:
                raise CommandFailed(" ".join([tool, "-X"] + left), "0",
                                    "the chains are still listed after their deletion")
        for family in families:
            if family in failures:
                raise failures[family]
        self.state.clear_pending([HOST])
        self.log("host rules removed: the forward path is OPEN")

    # ------------------------------------------------------------ reconciling

    def sync(self, running, trusted=None):
        """Make the host match the VIFs that really run here.

        running maps each running VifName's name to (VifName, NicAddresses or
        None when no data is known): VIFs on record that do not run are
        removed; a running VIF without new data keeps the data on record, or
        stays closed if there is none. One batch per family rebuilds all.
        Handed over like a VIF event: the VIF events queued before it are
        committed before it, those after it after it.
        """
        from vifrules import handover
        return handover.submit(self.config, handover.Change(
            handover.SYNC, running=running, trusted=trusted), lambda: self)

    def _sync(self, running, trusted):
        self.state.mark_pending(HOST)
        plan = sync_plan(self._wanted(), running)
        wanted, removed, applied = plan["wanted"], plan["removed"], plan["applied"]
        unchanged, without_data = plan["unchanged"], plan["without_data"]
        # The kernel follows what is wanted even if a record cannot be
        # written: a VIF that no longer runs loses its rules in any case.
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
        result = self._setup_host(trusted, wanted)
        if state_errors:
            raise state_errors[0]
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
        """What is in force, read from the kernel under the lock (a bounded
        wait): the host's verdict ('protected'), what is missing, the trusted
        uplinks in force, and each VIF on record with its addresses and drop
        counters. One 'save -c' per family, whatever the number of VIFs."""
        return locked(self._lock(), self._status)

    def _status(self):
        missing = []
        for name in self._left_behind():
            missing.append("%s: an operation did not finish; the next operation "
                           "or sync completes it" % name)
        nics = []
        for vif in ruleset.sorted_vifs(self.state.names()):
            try:
                nic = self.state.read(vif.name)
            except StateError:
                missing.append("%s: %s" % (vif.name, current_exception().message()))
                continue
            if nic is not None:
                nics.append((vif, nic))
        try:
            recorded = self.state.read_trusted()
        except StateError:
            missing.append(current_exception().message())
            recorded = None
        dumps, trusted = {}, None
        families = self.families()
        commands = [([self.config.save_tool(family), "-c"], None) for family in families]
        results = run_all(commands, False, self.config.command_timeout)
        for family, command, result in zip(families, commands, results):
            try:
                if result[0] != 0:
                    raise failure(command[0], result, self.config.command_timeout)
                saved = _parse_dump(family, command[0], result[1])
            except VifRulesError:
                missing.append("%s: cannot read the tables" % family)
                continue
            dumps[family] = result[1]
            members = [vif for vif, nic in nics if ruleset.wants_chains(family, nic)]
            for table in ruleset.TABLES[family]:
                missing.extend(self._table_missing(family, table, saved[table], members))
            in_force = _trusted_in_force(saved, family)
            if trusted is None:
                trusted = in_force
            elif in_force != trusted:
                missing.append("%s: trusted uplinks %s differ from %s" % (
                    family, " ".join(in_force) or "none", " ".join(trusted) or "none"))
        if trusted is None:
            trusted = recorded or []
        if recorded is not None and trusted != recorded:
            missing.append("trusted uplinks in force (%s) are not those recorded (%s)" % (
                " ".join(trusted) or "none", " ".join(recorded) or "none"))
        if self.config.enabled("arptables"):
            missing.extend(self._arptables_missing(trusted))
        base = self.config.get("PROC_SYS")
        for name in ruleset.host_sysctls():
            value = _read_first_line(fs.join(base, name))
            if value != "1":
                missing.append("sysctl %s is %s, not 1" % (name.replace("/", "."), value))
        vifs = []
        for vif, nic in nics:
            entry = nic.to_dict()
            entry["vif"] = vif.name
            entry["dropped"] = _drop_counters(dumps, vif.name)
            vifs.append(entry)
        from vifrules.vifpatch import hook_state  # status only: events must start fast
        return {"protected": not missing, "missing": missing,
                "trusted": trusted, "vifs": vifs, "hook": hook_state()}

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
        for chain in ruleset.host_chains(family, table, []):
            if chain.name not in saved.chains:
                missing.append("%s/%s: chain %s is missing" % (family, table, chain.name))
        wanted = {}
        for vif in members:
            for name in ruleset.vif_chain_names(family, table, vif.name):
                wanted[name] = 1
        stale = [name for name in saved.chains
                 if name[:4] in ("VRF-", "VRT-") and name not in wanted]
        stale.sort()
        for name in stale:
            missing.append("%s/%s: chain %s is in force but no record wants it; the next "
                           "sync or start removes it" % (family, table, name))
        for vif in members:
            for name in ruleset.vif_chain_names(family, table, vif.name):
                if name not in saved.chains:
                    missing.append("%s/%s: %s is on record but chain %s is gone"
                                   % (family, table, vif, name))
                elif name not in saved.targets:
                    missing.append("%s/%s: %s is on record but nothing jumps to %s"
                                   % (family, table, vif, name))
        return missing


def _culprit(error, names):
    """The one VIF of names that the failing restore line is about, if the
    tool named a line (error.context marks it) and it names one VIF."""
    for line in getattr(error, "context", None) or []:
        if not line.startswith(">"):
            continue
        found = {}
        for word in line.split():
            if word[:4] in ("VRF-", "VRT-"):
                word = word[4:]
            if word in names:
                found[word] = 1
        if len(found) == 1:
            return list(found.keys())[0]
    return None


def sync_plan(on_record, running):
    """What a sync makes of the records ({name: (VifName, nic)}) and the VIFs
    that run ({name: (VifName, nic or None when no data is known)}): every
    backend's sync. VIFs on record that do not run are removed; a running
    VIF without new data keeps the data on record, or stays closed."""
    plan = {"wanted": {}, "applied": [], "unchanged": [], "without_data": []}
    plan["removed"] = [name for name in on_record.keys() if name not in running]
    plan["removed"].sort()
    names = list(running.keys())
    names.sort()
    for name in names:
        vif, nic = running[name]
        known = on_record.get(name)
        if nic is None:
            if known is None:
                plan["without_data"].append(name)
            else:
                plan["unchanged"].append(name)
                plan["wanted"][name] = known
            continue
        plan["wanted"][name] = (vif, nic)
        if known is not None and known[1] == nic:
            plan["unchanged"].append(name)
        else:
            plan["applied"].append(name)
    return plan


def _parse_dump(family, argv, text):
    """{table: SavedTable} of a save tool's output; a table it leaves out
    reads as empty. Output that is not a dump is a CommandFailed: acting on
    it would duplicate or drop rules."""
    tables = parse_save(text)
    if tables is None:
        raise CommandFailed(" ".join(argv), "0", "output is not a %s dump: %s" % (
            family, text.strip()[:200]))
    for table in ruleset.TABLES[family]:
        tables.setdefault(table, SavedTable())
    return tables


def _restore_failure(argv, text, result, timeout):
    """The error of a restore run, with the input lines around the one the
    tool names (context), as Neutron's _log_restore_err logs them."""
    err = result[2]
    error = failure(argv, result, timeout)
    lines = text.split("\n")
    failing = _failing_line(err)
    if failing is None:
        window = range(0, min(len(lines), 2 * CONTEXT_LINES + 1))
    else:
        window = range(max(0, failing - 1 - CONTEXT_LINES),
                       min(len(lines), failing + CONTEXT_LINES))
    error.context = []
    for index in window:
        mark = (failing == index + 1 and ">") or " "
        error.context.append("%s%5d %s" % (mark, index + 1, lines[index]))
    return error


def _failing_line(err):
    """The input line a restore tool reports failing ('line 7 failed',
    'line 7: ...', 'Error occurred at line: 7'), or None."""
    words = err.replace(":", " ").split()
    for index in range(len(words) - 1):
        if words[index] == "line" and words[index + 1].isdigit():
            return int(words[index + 1])
    return None


def _trusted_in_force(saved, family):
    """The uplinks the kernel's port check lets through (beyond guest ports)."""
    table = ruleset.TABLES[family][0]
    guest_ports = [kind + "+" for kind in ruleset.KINDS]
    trusted = []
    for rule in saved[table].rules.get(ruleset.PORTS_IN, []):
        words = rule.split()
        for flag in ("-i", "--physdev-in"):
            if flag in words and words.index(flag) + 1 < len(words):
                port = words[words.index(flag) + 1]
                if port not in guest_ports and port not in trusted:
                    trusted.append(port)
    return trusted


def _arptables_has_chain(listing, chain):
    for line in listing.splitlines():
        if line.startswith("Chain ") and line.split()[1] == chain:
            return True
    return False


def _arptables_chain(listing, chain):
    """The rules of one chain in an 'arptables -L -n' listing."""
    rules, inside = [], False
    for line in listing.splitlines():
        if line.startswith("Chain "):
            inside = line.split()[1] == chain
        elif inside and line.strip():
            rules.append(line.strip())
    return rules


def _same_words(held, wanted):
    """An arptables listing rule holds the same options as a command (order
    and spelling of the listing differ: '-j X -i vif+')."""
    pairs = []
    for words in (held, wanted):
        options = {}
        index = 0
        while index + 1 < len(words):
            options[words[index]] = words[index + 1]
            index += 2
        pairs.append(options)
    return pairs[0] == pairs[1]


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
