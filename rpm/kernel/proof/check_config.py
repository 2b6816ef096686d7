#!/usr/bin/env python3
"""Check the built proof kernel's .config against the pack's fragment.

    check_config.py --fragment FRAGMENT --config CONFIG --symbols SYMBOLS

Every fragment option must be in CONFIG at least at the level it asks for,
unless the fragment documents the 6.1 difference in a "# 6.1: CONFIG_X ..."
comment; every fragment symbol this Kconfig does not define (renamed or
dropped) must be documented the same way, and a "modern name CONFIG_Y" there
must be a symbol this Kconfig defines.  SYMBOLS lists every symbol the
Kconfig tree defines (build-kernel.sh writes it).  Prints one line per option
and "kconfig check: PASS" or "kconfig check: FAIL ..."; exit 1 on FAIL.
"""
import argparse
import re
import sys

import rebuild_tool

NOTE_RE = re.compile(r"^#\s*6\.1:\s*CONFIG_([A-Za-z0-9_]+)\b(.*)$")
MODERN_RE = re.compile(r"modern name CONFIG_([A-Za-z0-9_]+)")


def documented(fragment):
    """Symbols the fragment explains for 6.1, with the explanation."""
    notes = {}
    with open(fragment) as f:
        for line in f:
            m = NOTE_RE.match(line.strip())
            if m:
                notes[m.group(1)] = m.group(2).strip(" :-")
    return notes


def check(fragment, config, symbols, tool):
    wanted, order = tool.fragment_values(fragment)
    have, _problems = tool.parse_config(config)
    with open(symbols) as f:
        known = set(line.strip() for line in f)
    notes = documented(fragment)
    failures = 0
    for sym in order:
        want = wanted[sym]
        got = have.get(sym)
        if sym not in known:
            state = "unknown to this Kconfig (renamed or dropped)"
        elif want == "n":
            state = None if got in (None, "n") else "ok (default %s)" % got
        elif got is None:
            state = "not in .config (dependencies not met)"
        elif tool.LEVEL.get(got, 0) < tool.LEVEL[want]:
            state = "is %s, fragment asks %s" % (got, want)
        else:
            state = None
        if state is None or state.startswith("ok"):
            sys.stdout.write("ok         CONFIG_%s=%s (%s)\n" % (sym, want, got or "n"))
        elif sym in notes:
            sys.stdout.write("documented CONFIG_%s: %s; fragment: %s\n" % (sym, state, notes[sym]))
            for modern in MODERN_RE.findall(notes[sym]):
                if modern not in known:
                    failures += 1
                    sys.stdout.write("WRONG      CONFIG_%s: its modern name CONFIG_%s is unknown "
                                     "to this Kconfig too\n" % (sym, modern))
        else:
            failures += 1
            sys.stdout.write("MISSING    CONFIG_%s: %s, and the fragment has no '# 6.1: CONFIG_%s' note\n"
                             % (sym, state, sym))
    return failures


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fragment", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--symbols", required=True)
    args = p.parse_args(argv)
    failures = check(args.fragment, args.config, args.symbols, rebuild_tool.load())
    sys.stdout.write("kconfig check: %s\n" % ((not failures and "PASS") or
                                             "FAIL (%d undocumented)" % failures))
    return (failures and 1) or 0


if __name__ == "__main__":
    sys.exit(main())
