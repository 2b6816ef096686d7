"""What vif-rules wants in force: one small JSON file per protected VIF.

Two sources of truth, kept apart (as Calico's felix keeps desired and
actual dataplane state apart):
- what is WANTED is this directory: a record per VIF (its MAC and
  addresses) and the host's trusted uplinks;
- what is IN FORCE is the kernel: status reads it, teardown removes what the
  kernel holds of a VIF by its name alone, a reconcile compares the two.

A marker in pending/ says that an operation on a VIF (or on the host) began
and has not been confirmed: the kernel may hold the state before it, after
it, or a mix per family. Whoever takes the lock next and finds a marker
rebuilds the host from the records (a redo), so any interruption converges.
While no marker is left, the records match the kernel and an event may
compute its incremental change from them.

Every failure to read or write here is a StateError: it never turns into a
reported success.
"""

import errno

from vifrules.addresses import VifName, nic_from_state
from vifrules import fs, jsontext
from vifrules.compat import current_exception
from vifrules.errors import InvalidArgument, StateError

SUFFIX = ".json"
IPV6_MEMBERS = "ipv6"  # a marker file per VIF with IPv6: the ip6tables trie's set
PENDING = "pending"
HOST = "host"  # the pending marker of host-wide operations (not a VIF name)
GROUP = "group"  # the pending marker of a group commit (its VIFs: see the records)
HOST_RECORD = "trusted-uplinks"  # not a VIF record: no .json suffix


def _describe(error):
    return getattr(error, "strerror", None) or str(error)


class StateDir(object):
    def __init__(self, path):
        self.path = path

    def _file(self, vif_name):
        return fs.join(self.path, vif_name + SUFFIX)

    # ------------------------------------------------------------ records

    def names(self):
        """VifName of every VIF on record (files that are not ours are ignored)."""
        return _vif_names(self.path, SUFFIX)

    def names_with_ipv6(self):
        """VifName of every VIF on record that has an IPv6 address."""
        return _vif_names(fs.join(self.path, IPV6_MEMBERS), "")

    def read(self, vif_name):
        """The NicAddresses on record for vif_name, or None when there is
        none; StateError when the record cannot be read or is corrupt."""
        path = self._file(vif_name)
        text = _read_text(path)
        if text is None:
            return None
        try:
            return nic_from_state(jsontext.loads(text))
        except (ValueError, InvalidArgument):
            raise StateError(path, "corrupt record (%d bytes)" % len(text))

    def readable(self, report):
        """[(VifName, NicAddresses)] of every record, sorted; a record that
        cannot be read is left out (its guest stays closed) and its
        StateError given to report."""
        from vifrules.ruleset import sorted_vifs
        result = []
        for vif in sorted_vifs(self.names()):
            try:
                nic = self.read(vif.name)
            except StateError:
                report(current_exception())
                continue
            if nic is not None:
                result.append((vif, nic))
        return result

    def write(self, vif_name, nic):
        self._write_file(self._file(vif_name), jsontext.dumps(nic.to_dict()))
        marker = fs.join(self.path, IPV6_MEMBERS, vif_name)
        if nic.ipv6:
            self._touch(marker)
        else:
            self._unlink(marker)

    def remove(self, vif_name):
        self._unlink(fs.join(self.path, IPV6_MEMBERS, vif_name))
        self._unlink(self._file(vif_name))

    # ------------------------------------------------------------ the host

    def read_trusted(self):
        """The trusted uplinks last put in force (a list), or None."""
        path = fs.join(self.path, HOST_RECORD)
        text = _read_text(path)
        if text is None:
            return None
        try:
            data = jsontext.loads(text)
            trusted = data["trusted"]
            if not isinstance(trusted, list):
                raise ValueError("trusted is not a list")
            return [str(name) for name in trusted]
        except (ValueError, KeyError, TypeError):
            raise StateError(path, "corrupt record (%d bytes)" % len(text))

    def write_trusted(self, trusted):
        self._write_file(fs.join(self.path, HOST_RECORD),
                         jsontext.dumps({"trusted": list(trusted)}))

    # ------------------------------------------------------------ markers

    def mark_pending(self, name):
        """name (a VIF's, or HOST) is about to change in the kernel."""
        self._touch(fs.join(self.path, PENDING, name))

    def clear_pending(self, names):
        for name in names:
            self._unlink(fs.join(self.path, PENDING, name))

    def pending(self):
        """Names whose last operation was not confirmed."""
        try:
            return fs.listdir(fs.join(self.path, PENDING))
        except OSError:
            if _errno() == errno.ENOENT:
                return []
            raise StateError(fs.join(self.path, PENDING),
                             "cannot list: " + _describe(current_exception()))

    # ------------------------------------------------------------ files

    def _write_file(self, path, text):
        temporary = path + ".tmp"
        try:
            fs.makedirs(fs.dirname(path))
            handle = open(temporary, "w")
            try:
                handle.write(text)
                handle.flush()
            finally:
                handle.close()
            fs.rename(temporary, path)
        except (IOError, OSError):
            error = current_exception()
            try:
                fs.unlink(temporary)
            except OSError:
                pass
            raise StateError(path, "cannot write: " + _describe(error))

    def _touch(self, path):
        try:
            fs.makedirs(fs.dirname(path))
            open(path, "w").close()
        except (IOError, OSError):
            raise StateError(path, "cannot write: " + _describe(current_exception()))

    def _unlink(self, path):
        try:
            fs.unlink(path)
        except OSError:
            if _errno() != errno.ENOENT:
                raise StateError(path, "cannot remove: " + _describe(current_exception()))


def _read_text(path):
    """A file's text, None if there is no such file, else StateError."""
    try:
        handle = open(path)
    except IOError:
        if _errno() == errno.ENOENT:
            return None
        raise StateError(path, "cannot read: " + _describe(current_exception()))
    try:
        try:
            return handle.read()
        except IOError:
            raise StateError(path, "cannot read: " + _describe(current_exception()))
    finally:
        handle.close()


def _errno():
    return getattr(current_exception(), "errno", None)


def _vif_names(directory, suffix):
    try:
        entries = fs.listdir(directory)
    except OSError:
        if _errno() == errno.ENOENT:
            return []
        raise StateError(directory, "cannot list: " + _describe(current_exception()))
    result = []
    for entry in entries:
        if not entry.endswith(suffix):
            continue
        try:
            result.append(VifName(entry[:len(entry) - len(suffix)]))
        except InvalidArgument:
            continue
    return result
