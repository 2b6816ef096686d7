"""Desired rules -> the input of one batch tool run (iptables-restore syntax).

One Batch is one table commit of one family: chains to write whole (created
or flushed, then filled), chains to delete, policies of built-in chains, and
jumps to insert into or remove from built-in chains.
"""


class Batch(object):
    def __init__(self, family):
        self.family = family
        self.chains = []
        self.delete = []
        self.policies = {}
        self.insert_jumps = []
        self.remove_jumps = []

    def is_empty(self):
        return not (self.chains or self.delete or self.policies or
                    self.insert_jumps or self.remove_jumps)


def _chain_header(family, name, policy):
    if family == "ebtables":
        return ":%s %s" % (name, policy)
    return ":%s - [0:0]" % name


def _builtin_header(family, name, policy):
    if family == "ebtables":
        return ":%s %s" % (name, policy)
    return ":%s %s [0:0]" % (name, policy)


def restore_text(batch):
    """Text for '<tool>-restore --noflush'. Declaring a user chain creates it or
    flushes it; deleting a chain declares it first so it need not exist."""
    family = batch.family
    lines = ["*filter"]
    builtins = list(batch.policies.keys())
    builtins.sort()
    for name in builtins:
        lines.append(_builtin_header(family, name, batch.policies[name]))
    for chain in batch.chains:
        lines.append(_chain_header(family, chain.name, chain.policy))
    for name in batch.delete:
        lines.append(_chain_header(family, name, "RETURN"))
    for builtin, target in batch.remove_jumps:
        lines.append("-D %s -j %s" % (builtin, target))
    for chain in batch.chains:
        for rule in chain.rules:
            lines.append("-A %s %s" % (chain.name, " ".join(rule)))
    for builtin, target in batch.insert_jumps:
        lines.append("-I %s 1 -j %s" % (builtin, target))
    for name in batch.delete:
        lines.append("-X %s" % name)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def parse_save(text):
    """A "<tool>-save" dump -> (chains {name: policy}, jumps, rules by chain).

    Only the filter table is read; jumps are the '-A CHAIN -j TARGET' rules
    with nothing else in them, which is how vif-rules hooks in.
    """
    chains = {}
    jumps = []
    rules = {}
    table = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and "] " in line:
            line = line[line.index("] ") + 2:]  # a '-c' counter prefix
        if line.startswith("*"):
            table = line[1:]
            continue
        if table != "filter":
            continue
        if line.startswith(":"):
            parts = line[1:].split()
            chains[parts[0]] = (len(parts) > 1 and parts[1]) or "-"
            rules.setdefault(parts[0], [])
        elif line.startswith("-A "):
            parts = line.split()
            rules.setdefault(parts[1], []).append(line)
            if len(parts) == 4 and parts[2] == "-j":
                jumps.append((parts[1], parts[3]))
    return chains, jumps, rules
