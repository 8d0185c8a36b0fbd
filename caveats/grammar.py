"""The shape every caveat shares (`KEY OP VALUE`) and the fullmatch patterns its kinds reuse.

Patterns use explicit ASCII classes: `\\d` and `\\w` would accept other scripts' digits and letters.
"""

from __future__ import annotations

import re

NAME = r"[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}"
NAME_RE = re.compile(NAME)
NAME_LIST = rf"{NAME}(?:,{NAME})*"
NAME_LIST_RE = re.compile(NAME_LIST)
# A tool pattern may end in `*` (prefix match); a bare `*` would be every tool, which is no restriction.
TOOL_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}\*?"
TOOL_LIST = rf"{TOOL_PATTERN}(?:,{TOOL_PATTERN})*"
TOOL_LIST_RE = re.compile(TOOL_LIST)
UINT = r"(?:0|[1-9][0-9]{0,8})"
UINT_RE = re.compile(UINT)

# KEY OP VALUE with single spaces; VALUE may itself hold spaces (`budget <= 5.00 USD`).
_CAVEAT_RE = re.compile(r"([a-z][A-Za-z0-9_.-]{0,127}) (=|!=|<|<=|>|>=|in) ([^ ].*)", re.DOTALL)
# C0, DEL, C1, and the Unicode line and paragraph separators.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class CaveatSyntaxError(ValueError):
    """A caveat's text does not follow the grammar; the message says why in plain words."""


def split(text: str) -> tuple[str, str, str]:
    """Split caveat text into (key, op, value), or raise CaveatSyntaxError."""
    if _CONTROL_RE.search(text):
        raise CaveatSyntaxError("caveat contains a control character")
    m = _CAVEAT_RE.fullmatch(text)
    if m is None or text.endswith(" "):
        raise CaveatSyntaxError("caveat is not of the form 'KEY OP VALUE' with single spaces")
    return m.group(1), m.group(2), m.group(3)


def parse_uint(text: str, what: str, maximum: int) -> int:
    """A non-negative decimal integer in ASCII digits, no sign, no leading zeros, at most `maximum`."""
    if not UINT_RE.fullmatch(text) or int(text) > maximum:
        raise CaveatSyntaxError(f"{what} must be a whole number from 0 to {maximum}, got {text!r}")
    return int(text)


def parse_names(text: str, what: str) -> tuple[str, ...]:
    """A comma-separated list of names without spaces."""
    if not NAME_LIST_RE.fullmatch(text):
        raise CaveatSyntaxError(f"{what} must be comma-separated names without spaces, got {text!r}")
    return tuple(text.split(","))
