"""Strict JSON text <-> Python values, on every dom0 Python.

Python 2.4 has no json module (and simplejson is not on every dom0), and on
Python 3 importing json costs a vif event more than its whole rule work.
loads() takes RFC 8259 JSON only: one value, no duplicate keys, no NaN,
nesting at most MAX_DEPTH deep; anything else raises ValueError. Strings
come back as str when they are ASCII (unicode otherwise, on Python 2).
dumps() writes what loads() reads, keys sorted, so its output is stable.
"""

import sys

from vifrules.compat import text_type

MAX_DEPTH = 32
_WHITESPACE = " \t\n\r"
_DIGITS = "0123456789"
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n",
            "r": "\r", "t": "\t"}
_ESCAPED = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n",
            "\r": "\\r", "\t": "\\t"}
_CONSTANTS = (("true", True), ("false", False), ("null", None))

if sys.version_info[0] >= 3:
    _INTEGERS = (int,)
    _unichr = chr
else:
    _INTEGERS = (int, long)  # noqa: F821 (Python 2 only)
    _unichr = unichr  # noqa: F821 (Python 2 only)


class _Reader(object):
    def __init__(self, text):
        if not isinstance(text, text_type):
            try:
                text = text.decode("utf-8")
            except (AttributeError, UnicodeError):
                raise ValueError("JSON text must be UTF-8")
        self.text = text
        self.at = 0

    def fail(self, what):
        raise ValueError("%s at character %d" % (what, self.at))

    def skip_space(self):
        text, at = self.text, self.at
        while at < len(text) and text[at] in _WHITESPACE:
            at += 1
        self.at = at

    def peek(self):
        self.skip_space()
        if self.at >= len(self.text):
            self.fail("unexpected end")
        return self.text[self.at]

    def value(self, depth):
        if depth > MAX_DEPTH:
            self.fail("nested too deep")
        char = self.peek()
        if char == "{":
            return self.object(depth + 1)
        if char == "[":
            return self.array(depth + 1)
        if char == '"':
            return self.string()
        if char == "-" or char in _DIGITS:
            return self.number()
        for word, value in _CONSTANTS:
            if self.text.startswith(word, self.at):
                self.at += len(word)
                return value
        self.fail("unexpected %r" % char)

    def object(self, depth):
        self.at += 1
        result = {}
        if self.peek() == "}":
            self.at += 1
            return result
        while 1:
            if self.peek() != '"':
                self.fail("expected a string key")
            key = self.string()
            if key in result:
                self.fail("duplicate key %r" % key)
            if self.peek() != ":":
                self.fail("expected ':'")
            self.at += 1
            result[key] = self.value(depth)
            char = self.peek()
            self.at += 1
            if char == "}":
                return result
            if char != ",":
                self.fail("expected ',' or '}'")

    def array(self, depth):
        self.at += 1
        result = []
        if self.peek() == "]":
            self.at += 1
            return result
        while 1:
            result.append(self.value(depth))
            char = self.peek()
            self.at += 1
            if char == "]":
                return result
            if char != ",":
                self.fail("expected ',' or ']'")

    def string(self):
        text = self.text
        self.at += 1
        parts = []
        start = self.at
        while 1:
            end = start
            while end < len(text) and text[end] not in '"\\' and text[end] >= " ":
                end += 1
            parts.append(text[start:end])
            self.at = end
            if end >= len(text):
                self.fail("unterminated string")
            char = text[end]
            if char == '"':
                self.at = end + 1
                break
            if char != "\\":
                self.fail("control character in string")
            parts.append(self.escape())
            start = self.at
        result = "".join(parts)
        try:
            return str(result)  # ASCII: a plain str on Python 2 too
        except UnicodeError:
            return result

    def escape(self):
        text = self.text
        kind = text[self.at + 1:self.at + 2]
        if kind in _ESCAPES:
            self.at += 2
            return _ESCAPES[kind]
        if kind != "u":
            self.fail("bad escape")
        code = self.hex4(self.at + 2)
        self.at += 6
        if 0xd800 <= code < 0xdc00 and text[self.at:self.at + 2] == "\\u":
            low = self.hex4(self.at + 2)
            if 0xdc00 <= low < 0xe000:
                self.at += 6
                return _pair(code, low)
        return _unichr(code)

    def hex4(self, at):
        digits = self.text[at:at + 4]
        if len(digits) != 4 or [c for c in digits if c not in "0123456789abcdefABCDEF"]:
            self.fail("bad \\u escape")
        return int(digits, 16)

    def number(self):
        text, start = self.text, self.at
        at = start
        if text[at] == "-":
            at += 1
        digits = _run(text, at, _DIGITS)
        if digits == at or (text[at] == "0" and digits > at + 1):
            self.fail("bad number")
        at = digits
        is_float = False
        if text[at:at + 1] == ".":
            end = _run(text, at + 1, _DIGITS)
            if end == at + 1:
                self.fail("bad number")
            at, is_float = end, True
        if text[at:at + 1] in ("e", "E"):
            at += 1
            if text[at:at + 1] in ("+", "-"):
                at += 1
            end = _run(text, at, _DIGITS)
            if end == at:
                self.fail("bad number")
            at, is_float = end, True
        self.at = at
        if is_float:
            return float(text[start:at])
        return int(text[start:at])


def _run(text, at, chars):
    while at < len(text) and text[at] in chars:
        at += 1
    return at


def _pair(high, low):
    code = 0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00)
    try:
        return _unichr(code)
    except ValueError:  # a narrow Python 2 build keeps the surrogates
        return _unichr(high) + _unichr(low)


def loads(text):
    reader = _Reader(text)
    value = reader.value(0)
    reader.skip_space()
    if reader.at != len(reader.text):
        reader.fail("extra data")
    return value


def dumps(value):
    parts = []
    _dump(value, parts, 0)
    return "".join(parts)


def _dump(value, parts, depth):
    if depth > MAX_DEPTH:
        raise ValueError("nested too deep")
    if value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, _INTEGERS):
        parts.append(str(int(value)))
    elif isinstance(value, float):
        if value != value or value * 0 != 0:  # NaN or infinite
            raise ValueError("not a JSON number: %r" % value)
        parts.append(repr(value))
    elif isinstance(value, (str, text_type)):
        parts.append(_quote(value))
    elif isinstance(value, dict):
        keys = list(value.keys())
        for key in keys:
            if not isinstance(key, (str, text_type)):
                raise ValueError("JSON object keys must be strings: %r" % (key,))
        keys.sort()
        items = []
        for key in keys:
            item = [_quote(key), ": "]
            _dump(value[key], item, depth + 1)
            items.append("".join(item))
        parts.append("{" + ", ".join(items) + "}")
    elif isinstance(value, (list, tuple)):
        items = []
        for entry in value:
            item = []
            _dump(entry, item, depth + 1)
            items.append("".join(item))
        parts.append("[" + ", ".join(items) + "]")
    else:
        raise ValueError("cannot write %r as JSON" % (value,))


def _quote(text):
    """ASCII-only JSON string: everything outside printable ASCII escaped."""
    if not isinstance(text, text_type):
        text = text.decode("utf-8")
    out = ['"']
    for char in text:
        if char in _ESCAPED:
            out.append(_ESCAPED[char])
        elif " " <= char <= "~":
            out.append(char)
        else:
            code = ord(char)
            if code >= 0x10000:
                code -= 0x10000
                out.append("\\u%04x\\u%04x" % (0xd800 + (code >> 10), 0xdc00 + (code & 0x3ff)))
            else:
                out.append("\\u%04x" % code)
    out.append('"')
    return str("".join(out))
