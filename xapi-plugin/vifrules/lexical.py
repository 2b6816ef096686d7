"""Character-level checks for the strict parsers, without the re module
(whose import costs a vif event more than the checks it would replace)."""

DIGITS = "0123456789"
HEX_DIGITS = DIGITS + "abcdefABCDEF"
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LETTERS = UPPER + UPPER.lower()


def only(text, allowed):
    """True if text is not empty and every character is in allowed."""
    if not text:
        return False
    for char in text:
        if char not in allowed:
            return False
    return True


def decimal(text, max_digits):
    """A decimal number of at most max_digits digits, no leading zero, no
    sign: exactly the text int() would print back (checked in C)."""
    if len(text) > max_digits or text[:1] in ("-", ""):
        return False
    try:
        return str(int(text)) == text
    except (ValueError, UnicodeError):
        return False
