"""Glob patterns (``*`` is the only wildcard) turned into index-friendly SQL filters."""

from __future__ import annotations

from dataclasses import dataclass

_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


@dataclass(frozen=True)
class KeyScan:
    """How to find the keys matching one pattern.

    ``lower``/``upper`` bound a range on the key in byte (code point) order:
    that range alone is what lets a btree on a "C" key serve the scan, also
    under a prepared statement's generic plan. ``like``/``glob`` then filter
    inside the range; they are None when the range is already exact.
    """

    exact: str | None
    lower: str
    upper: str | None
    like: str | None
    glob: str | None


def next_prefix(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix``.

    None when there is none (empty prefix, or only U+10FFFF characters).
    """
    chars = list(prefix)
    while chars:
        code = ord(chars[-1])
        if code < _MAX_CODE_POINT:
            code += 1
            if code in _SURROGATES:
                code = _SURROGATES.stop
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def to_like(pattern: str) -> str:
    """A LIKE pattern (escape character backslash) matching what ``pattern`` matches."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def to_glob(pattern: str) -> str:
    """A SQLite GLOB pattern matching what ``pattern`` matches (GLOB is case-sensitive)."""
    return "".join("[" + c + "]" if c in "?[" else c for c in pattern)


def scan_for_pattern(pattern: str) -> KeyScan:
    star = pattern.find("*")
    if star < 0:
        return KeyScan(exact=pattern, lower=pattern, upper=None, like=None, glob=None)
    prefix = pattern[:star]
    if star == len(pattern) - 1:
        return scan_for_prefix(prefix)
    return KeyScan(
        exact=None,
        lower=prefix,
        upper=next_prefix(prefix),
        like=to_like(pattern),
        glob=to_glob(pattern),
    )


def scan_for_prefix(prefix: str) -> KeyScan:
    """Every key that starts with ``prefix``, taken literally."""
    return KeyScan(exact=None, lower=prefix, upper=next_prefix(prefix), like=None, glob=None)
