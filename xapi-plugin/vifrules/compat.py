"""Small shims so one source runs on Python 2.4 to 3.x."""

import sys

PY3 = sys.version_info[0] >= 3

if PY3:
    text_type = str
    string_types = (str,)
else:
    text_type = unicode  # noqa: F821 (Python 2 only)
    string_types = (str, unicode)  # noqa: F821


def to_text(data):
    """Bytes from a pipe to text; latin-1 never fails and keeps bytes 1:1."""
    if isinstance(data, text_type):
        return data
    return data.decode("latin-1")


def to_bytes(text):
    if PY3 and isinstance(text, str):
        return text.encode("latin-1")
    return text


def current_exception():
    return sys.exc_info()[1]

