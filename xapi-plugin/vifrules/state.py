"""What vif-rules has applied: one small JSON file per protected VIF.

The files let status and sync report and re-protect guests after a flush,
and give the set of VIFs the dispatch trie is built from. Teardown only
deletes a file, so it never needs the guest's data.
"""

import os

from vifrules.addresses import VifName, nic_from_state
from vifrules import jsontext
from vifrules.errors import InvalidArgument

SUFFIX = ".json"
IPV6_MEMBERS = "ipv6"  # a marker file per VIF with IPv6: the ip6tables trie's set


class StateDir(object):
    def __init__(self, path):
        self.path = path

    def _file(self, vif_name):
        return os.path.join(self.path, vif_name + SUFFIX)

    def names(self):
        """VifName of every VIF on record (files that are not ours are ignored)."""
        return _vif_names(self.path, SUFFIX)

    def names_with_ipv6(self):
        """VifName of every VIF on record that has an IPv6 address."""
        return _vif_names(os.path.join(self.path, IPV6_MEMBERS), "")

    def read(self, vif_name):
        """The NicAddresses on record for vif_name, or None."""
        try:
            handle = open(self._file(vif_name))
        except IOError:
            return None
        try:
            try:
                return nic_from_state(jsontext.loads(handle.read()))
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
            handle.write(jsontext.dumps(nic.to_dict()))
        finally:
            handle.close()
        os.rename(temporary, self._file(vif_name))
        marker = os.path.join(self.path, IPV6_MEMBERS, vif_name)
        if nic.ipv6:
            if not os.path.isdir(os.path.dirname(marker)):
                os.makedirs(os.path.dirname(marker))
            open(marker, "w").close()
        else:
            _unlink(marker)

    def remove(self, vif_name):
        _unlink(os.path.join(self.path, IPV6_MEMBERS, vif_name))
        _unlink(self._file(vif_name))


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _vif_names(directory, suffix):
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    result = []
    for entry in entries:
        if not entry.endswith(suffix):
            continue
        try:
            result.append(VifName(entry[:len(entry) - len(suffix)]))
        except InvalidArgument:
            continue
    return result
