#!/usr/bin/python
"""host-rules start|stop|restart|status|check [TRUSTED_INTERFACES]"""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
for _path in (os.path.join(_here, "..", "xapi-plugin"), _here, "/usr/lib/vif-rules"):
    if os.path.isdir(os.path.join(_path, "vifrules")):
        sys.path.insert(0, os.path.abspath(_path))
        break

from vifrules.cli import host_rules_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(host_rules_main(sys.argv[1:]))
