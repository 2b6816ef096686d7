"""The file operations of the vif event path, over the posix module.

Importing os costs a vif event 4-5 ms (it loads a dozen modules, on
Python 3 the collections ABCs among them): more than a waiting caller's
whole work. In a boot storm most hooks only hand their change over and
wait, so the modules they load (cli, config, backend, handover, lock) use
these instead, and so do the engine, the records and the command runner,
which the caller that commits loads (a few dozen commits in a storm).
"""

import posix
import sys

# stat's S_IFMT, S_IFDIR and S_IFREG (0170000, 0040000, 0100000)
_S_IFMT, _S_IFDIR, _S_IFREG = 61440, 16384, 32768

getpid = posix.getpid
kill = posix.kill
listdir = posix.listdir
rename = posix.rename
unlink = posix.unlink


def join(path, *parts):
    """os.path.join: a part that starts with / starts the path again."""
    for part in parts:
        if part.startswith("/") or not path:
            path = part
        elif path.endswith("/"):
            path = path + part
        else:
            path = path + "/" + part
    return path


def dirname(path):
    """os.path.dirname."""
    head = path[:path.rfind("/") + 1]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head


def exists(path):
    try:
        posix.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return False
    return True


def _is(path, kind):
    try:
        return posix.stat(path).st_mode & _S_IFMT == kind
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return False


def isdir(path):
    return _is(path, _S_IFDIR)


def isfile(path):
    return _is(path, _S_IFREG)


def mtime(path):
    return posix.stat(path).st_mtime


def makedirs(path, mode=511):  # 0777 less the umask, as os.makedirs
    """os.makedirs, content if the directory is there already."""
    if isdir(path):
        return
    parent = dirname(path.rstrip("/"))
    if parent and parent != path:
        makedirs(parent, mode)
    try:
        posix.mkdir(path, mode)
    except OSError:
        if not isdir(path):
            raise


# os.environ's data is posix.environ itself (both Pythons): what it sets, this sees.
if sys.version_info[0] >= 3:
    def _text(data):
        """As os decodes posix.environ's bytes."""
        return data.decode(sys.getfilesystemencoding(), "surrogateescape")

    def environ():
        """A copy of os.environ."""
        return dict([(_text(key), _text(value)) for key, value in posix.environ.items()])

    def getenv(name):
        """os.environ.get(name): Python 3's posix.environ holds bytes."""
        value = posix.environ.get(name.encode("ascii"))
        if value is None:
            return None
        return _text(value)
else:
    def environ():
        return dict(posix.environ)

    def getenv(name):
        return posix.environ.get(name)
