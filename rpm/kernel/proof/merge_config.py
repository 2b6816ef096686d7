#!/usr/bin/env python3
"""Merge the proof kernel's config (build side, called by build-kernel.sh).

    merge_config.py --base BASE --fragment FRAGMENT DOTCONFIG

BASE's values are set as they are (what a boot needs), then the pack's
fragment is merged with the pack's own raise-only merge (merge_config_text of
rebuild-kernel-srpm.py), as into a vendor config; olddefconfig follows.
"""
import argparse
import sys

import rebuild_tool


def set_values(text, values, tool):
    """Set each symbol of values exactly (replace its line or append it)."""
    lines = text.splitlines(True)
    done = set()
    for i, line in enumerate(lines):
        m = tool.SET_RE.match(line.rstrip("\n")) or tool.UNSET_RE.match(line.rstrip("\n"))
        if m and m.group(1) in values:
            sym = m.group(1)
            lines[i] = "" if sym in done else config_line(sym, values[sym])
            done.add(sym)
    lines += [config_line(s, v) for s, v in values.items() if s not in done]
    return "".join(lines)


def config_line(sym, val):
    if val == "n":
        return "# CONFIG_%s is not set\n" % sym
    return "CONFIG_%s=%s\n" % (sym, val)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True)
    p.add_argument("--fragment", required=True)
    p.add_argument("dotconfig")
    args = p.parse_args(argv)
    tool = rebuild_tool.load()
    base, problems = tool.parse_config(args.base)
    if problems:
        raise SystemExit("base config is inconsistent:\n  " + "\n  ".join(problems))
    with open(args.dotconfig) as f:
        text = set_values(f.read(), base, tool)
    fragment, _order = tool.fragment_values(args.fragment)
    text, _changes = tool.merge_config_text(text, fragment)
    with open(args.dotconfig, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
