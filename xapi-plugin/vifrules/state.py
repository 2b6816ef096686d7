"""What vif-rules has applied: one small JSON file per protected VIF.

The files let status and sync report and re-protect guests after a flush,
and give the set of VIFs the dispatch trie is built from. Teardown only
deletes a file, so it never needs the guest's data.
"""

import os

from vifrules.addresses import VifName, nic_from_state
from vifrules.compat import json
from vifrules.errors import InvalidArgument

SUFFIX = ".json"


class StateDir(object):
    def __init__(self, path):
        self.path = path

    def _file(self, vif_name):
        return os.path.join(self.path, vif_name + SUFFIX)

    def names(self):
        """VifName of every VIF on record (files that are not ours are ignored)."""
        try:
            entries = os.listdir(self.path)
        except OSError:
            return []
        result = []
        for entry in entries:
            if not entry.endswith(SUFFIX):
                continue
            try:
                result.append(VifName(entry[:-len(SUFFIX)]))
            except InvalidArgument:
                continue
        return result

    def read(self, vif_name):
        """The NicAddresses on record for vif_name, or None."""
        try:
            handle = open(self._file(vif_name))
        except IOError:
            return None
        try:
            try:
                return nic_from_state(json.loads(handle.read()))
            except (ValueError, InvalidArgument):
                return None
        finally:
            handle.close()

    def write(self, vif_name, nic):
        if not os.path.isdir(self.path):
            os.makedirs(self.path)
        temporary = self._file(vif_name) + ".tmp"
        handle = open(temporary, "w")
        try:
            handle.write(json.dumps(nic.to_dict(), sort_keys=True))
        finally:
            handle.close()
        os.rename(temporary, self._file(vif_name))

    def remove(self, vif_name):
        try:
            os.unlink(self._file(vif_name))
        except OSError:
            pass
