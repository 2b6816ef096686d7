#!/usr/bin/python -S
"""vif hook: called by XenServer's vif script on every VIF online/offline.

    vif_rules.py online VIF [--network JSON]
    vif_rules.py offline VIF

It runs with python -S: without site-packages Python starts faster, and the
hook needs them only to ask XAPI (vifrules.xapi loads them then). It loads
no os (vifrules.fs says why) and no garbage collector runs: the process
lives for one event, its memory goes back when it ends.
"""

import gc
import posix
import sys

gc.disable()

# The library sits beside this file in a checkout, in /usr/lib/vif-rules once installed.
_here = __file__[:__file__.rfind("/") + 1] or "./"
if not _here.startswith("/"):
    _here = posix.getcwd() + "/" + _here
for _path in (_here, "/usr/lib/vif-rules"):
    try:
        posix.stat(_path + "/vifrules/__init__.py")
    except OSError:
        continue
    sys.path.insert(0, _path)
    break

from vifrules.cli import hook_main  # noqa: E402

if __name__ == "__main__":
    status = hook_main(sys.argv[1:])
    # udev waits for this process: once its output is out and the lock is
    # released, end without the interpreter's teardown (a millisecond).
    sys.stdout.flush()
    sys.stderr.flush()
    posix._exit(status)
