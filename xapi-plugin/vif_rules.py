#!/usr/bin/python -S
"""vif hook: called by XenServer's vif script on every VIF online/offline.

    vif_rules.py online VIF [--network JSON]
    vif_rules.py offline VIF

It runs with python -S: without site-packages Python starts faster, and the
hook needs them only to ask XAPI (vifrules.xapi loads them then).
"""

import os
import sys

# The library sits beside this file in a checkout, in /usr/lib/vif-rules once installed.
for _path in (os.path.dirname(os.path.abspath(__file__)), "/usr/lib/vif-rules"):
    if os.path.isdir(os.path.join(_path, "vifrules")):
        sys.path.insert(0, _path)
        break

from vifrules.cli import hook_main  # noqa: E402

if __name__ == "__main__":
    status = hook_main(sys.argv[1:])
    # udev waits for this process: once its output is out and the lock is
    # released, end without the interpreter's teardown (a millisecond).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
