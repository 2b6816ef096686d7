#!/usr/bin/env python3
"""Write patches/vif-<generation>.patch: for each generation, the unified diff
vif-patch makes to our fixture of it (tests/fixtures/vif/), with the host's
path in its header, so that `patch -p1 -d /` would apply it on a host.

Run it after changing vifrules/vifpatch.py or a fixture; the tests check that
the files are current and that GNU patch gives vif-patch's exact bytes.
(Build-time tool, Python 3: not shipped to dom0.)
"""

import difflib
import os
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "xapi-plugin"))

from vifrules import vifpatch  # noqa: E402

FIXTURES = os.path.join(TOP, "tests", "fixtures", "vif")
# generation -> (fixture, the path of the script on a host)
SOURCES = {}
for _generation in vifpatch.GENERATIONS:
    if _generation.name.startswith("F-"):
        SOURCES[_generation.name] = ("vif-real-" + _generation.name, "usr/libexec/xenopsd/vif-real")
    else:
        SOURCES[_generation.name] = ("vif-" + _generation.name, "etc/xensource/scripts/vif")


def patch_file(name):
    return os.path.join(TOP, "patches", "vif-%s.patch" % name)


def read_text(path):
    with open(path, "rb") as handle:
        return handle.read().decode("latin-1")


def diff_for(name):
    """The unified diff (text) of generation name's fixture, patched with the default hook."""
    fixture, host_path = SOURCES[name]
    before = read_text(os.path.join(FIXTURES, fixture))
    generation = vifpatch.generation_named(name)
    after = vifpatch.patched_text(before, generation, vifpatch.DEFAULT_HOOK)
    header = "vif-rules: generation %s (%s), made by patches/make_patches.py\n" % (
        name, generation.releases)
    lines = difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                 "a/" + host_path, "b/" + host_path)
    return header + "".join(lines)


def main():
    for name in sorted(SOURCES):
        with open(patch_file(name), "wb") as handle:
            handle.write(diff_for(name).encode("latin-1"))
        sys.stdout.write("wrote %s\n" % os.path.relpath(patch_file(name), TOP))


if __name__ == "__main__":
    main()
