"""Desired rules -> the input of one batch tool run (iptables-restore syntax).

One Batch is one table commit of one family: chains to write whole (created
or flushed, then filled), chains to delete, policies of built-in chains, and
jumps to insert into or remove from built-in chains.
"""


class Batch(object):
    def __init__(self, family, table="filter"):
        self.family = family
        self.table = table
        self.chains = []  # written whole: created, or flushed and refilled
        self.new_chains = []  # known not to exist: created and filled, no flush
        self.inserts = []  # (chain, position, rule) into chains that exist
        self.delete = []
        self.policies = {}
        self.insert_jumps = []
        self.remove_jumps = []

    def is_empty(self):
        return not (self.chains or self.new_chains or self.inserts or
                    self.delete or
                    self.policies or self.insert_jumps or self.remove_jumps)


def _chain_header(family, name):
    # No policy on our chains: each ends with its own verdict (see ruleset.Chain).
    if family == "ebtables":
        return ":%s RETURN" % name
    return ":%s - [0:0]" % name


def _builtin_header(family, name, policy):
    if family == "ebtables":
        return ":%s %s" % (name, policy)
    return ":%s %s [0:0]" % (name, policy)


def restore_text(batches):
    """Text for '<tool>-restore --noflush', one commit per table. Declaring a
    user chain creates it or flushes it; deleting a chain declares it first so
    it need not exist."""
    lines = []
    for batch in batches:
        if not batch.is_empty():
            lines.extend(_table_lines(batch))
    return "\n".join(lines) + "\n"


def _table_lines(batch):
    family = batch.family
    lines = ["*" + batch.table]
    builtins = list(batch.policies.keys())
    builtins.sort()
    for name in builtins:
        lines.append(_builtin_header(family, name, batch.policies[name]))
    for chain in batch.chains + batch.new_chains:
        lines.append(_chain_header(family, chain.name))
    for name in batch.delete:
        lines.append(_chain_header(family, name))
    # Legacy ebtables-restore --noflush does not empty a declared chain that
    # exists: flush explicitly, in every family alike.
    for chain in batch.chains:
        lines.append("-F %s" % chain.name)
    for name in batch.delete:
        lines.append("-F %s" % name)
    for builtin, target in batch.remove_jumps:
        lines.append("-D %s -j %s" % (builtin, target))
    for chain in batch.chains + batch.new_chains:
        for rule in chain.rules:
            lines.append("-A %s %s" % (chain.name, " ".join(rule)))
    for chain, position, rule in batch.inserts:
        lines.append("-I %s %d %s" % (chain, position, " ".join(rule)))
    for builtin, target in batch.insert_jumps:
        lines.append("-I %s 1 -j %s" % (builtin, target))
    for name in batch.delete:
        lines.append("-X %s" % name)
    if family != "ebtables":
        # ebtables-restore (2.0.x) knows no COMMIT line and refuses it: a
        # table ends at the next '*' or the end of the input (the nft variant
        # commits there too, all or nothing).
        lines.append("COMMIT")
    return lines


class SavedTable(object):
    """What a '<tool>-save' dump says of one table."""

    def __init__(self):
        self.chains = {}  # name -> policy ('-' for iptables user chains)
        self.jumps = []  # (chain, target) of rules that are only '-j TARGET'
        self.rules = {}  # chain -> [rule text after '-A CHAIN ']
        self.targets = {}  # chain names some rule jumps or goes to


_DUMP_STARTS = ("*", ":", "-A ", "COMMIT", "#")


def parse_save(text):
    """A '<tool>-save' dump (with or without -c) -> {table: SavedTable}, or
    None when the text is not a dump (a tool that printed something else)."""
    tables = {}
    table = None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("[") and "] " in line:
            line = line[line.index("] ") + 2:]  # a '-c' counter prefix
        if not line.startswith(_DUMP_STARTS):
            return None
        if line.startswith("*"):
            table = tables.setdefault(line[1:], SavedTable())
            continue
        if table is None:
            if line.startswith("#"):
                continue
            return None
        if line.startswith(":"):
            parts = line[1:].split()
            table.chains[parts[0]] = (len(parts) > 1 and parts[1]) or "-"
        elif line.startswith("-A "):
            parts = line.split()
            if len(parts) < 2:
                return None
            table.rules.setdefault(parts[1], []).append(" ".join(parts[2:]))
            if len(parts) == 4 and parts[2] == "-j":
                table.jumps.append((parts[1], parts[3]))
            for index in range(2, len(parts) - 1):
                if parts[index] in ("-j", "-g", "--goto", "--jump"):
                    table.targets[parts[index + 1]] = 1
    return tables
