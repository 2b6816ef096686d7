#!/usr/bin/env python
"""Re-protect a host the 2010 way: run the per-rule baseline hook for every VIF.

    baseline_sync.py FILE     FILE holds a JSON list of [vif, network-json]
"""

import json
import os
import subprocess
import sys

HOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "baseline_hook.py")


def main(argv):
    with open(argv[0]) as handle:
        vifs = json.load(handle)
    failed = 0
    for vif, network in vifs:
        if subprocess.call([sys.executable, HOOK, "online", vif, "--network", network]) != 0:
            failed += 1
    return failed and 1 or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
