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
    """A decimal number of at most max_digits digits, no leading zero."""
    return only(text, DIGITS) and len(text) <= max_digits and \
        (text == "0" or text[0] != "0")
