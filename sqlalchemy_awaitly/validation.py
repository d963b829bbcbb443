"""Checks on caller input, done before any SQL is built or sent."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import timedelta
from typing import TypeAlias

from .errors import InvalidInputError

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# PostgreSQL truncates identifiers at 63 bytes; a silently truncated index
# name would no longer match the one the migrations and checks expect.
MAX_IDENTIFIER_LENGTH = 63
# The longest TTL accepted: 100 years. Longer values overflow SQLite's date
# arithmetic or PostgreSQL's interval range, or are a unit mistake.
MAX_TTL_SECONDS = 100 * 365.25 * 24 * 3600


def check_identifier(name: object, what: str) -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise InvalidInputError(
            f"{what} must be a plain identifier (letters, digits, underscore; "
            f"not starting with a digit), got {name!r}"
        )
    if len(name) > MAX_IDENTIFIER_LENGTH:
        raise InvalidInputError(
            f"{what} {name!r} is longer than {MAX_IDENTIFIER_LENGTH} characters"
        )
    return name


# The longest key, in UTF-8 bytes of the whole stored key (a prefix such as
# "workflow:state:" included): PostgreSQL's btree index refuses entries over
# about 2,700 bytes, SQLite has no such limit; one limit holds on both.
MAX_KEY_BYTES = 2048
# A str of this many characters or fewer cannot exceed MAX_KEY_BYTES (4 bytes a
# character at most), so only longer keys are encoded to be measured.
_KEY_CHARS_SURELY_SHORT = MAX_KEY_BYTES // 4


def lone_surrogate(text: str) -> bool:
    """True if ``text`` cannot be stored as UTF-8 (a lone surrogate, e.g. from
    ``os.fsdecode`` of bad bytes or a JavaScript string cut in half)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key must be str, got {type(key).__name__}")
    if not key:
        raise InvalidInputError("key must not be empty")
    if "\x00" in key:
        raise InvalidInputError(f"key {key!r} contains a NUL character")
    if len(key) > _KEY_CHARS_SURELY_SHORT and len(key.encode("utf-8", "replace")) > MAX_KEY_BYTES:
        raise InvalidInputError(
            f"key {key[:40]!r}... is longer than {MAX_KEY_BYTES} bytes in UTF-8 (the whole "
            "stored key, prefix included)"
        )
    if lone_surrogate(key):
        raise InvalidInputError(f"key {key!r} contains a lone surrogate, which UTF-8 cannot hold")
    return key


def check_value(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"value for key {key!r} must be str, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInputError(
            f"value for key {key!r} contains a NUL character, which PostgreSQL text cannot hold"
        )
    if lone_surrogate(value):
        raise InvalidInputError(
            f"value for key {key!r} contains a lone surrogate, which UTF-8 cannot hold "
            "(JSON-escape it as \\uXXXX, as JSON.stringify does)"
        )
    return value


Ttl: TypeAlias = "float | timedelta | None"
"""A time to live: seconds, a ``timedelta``, or None for "never expires"."""


def check_ttl(ttl: object) -> float | None:
    """Return the TTL in seconds as a float, or None for 'never expires'."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        ttl = ttl.total_seconds()
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(
            f"ttl must be a number of seconds, a timedelta or None, got {type(ttl).__name__}"
        )
    try:
        seconds = float(ttl)
    except OverflowError:  # an int too large for a float
        raise InvalidInputError("ttl is longer than 100 years; pass None for no expiry") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInputError(f"ttl must be a positive finite number of seconds, got {ttl!r}")
    if seconds > MAX_TTL_SECONDS:
        raise InvalidInputError(f"ttl {ttl!r} is longer than 100 years; pass None for no expiry")
    return seconds


def check_keys(keys: Iterable[str]) -> list[str]:
    if isinstance(keys, str):
        raise TypeError("expected a collection of keys, got a single str")
    return list(dict.fromkeys(check_key(k) for k in keys))


def check_pattern(pattern: object) -> str:
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be str, got {type(pattern).__name__}")
    if "\x00" in pattern:
        raise InvalidInputError(f"pattern {pattern!r} contains a NUL character")
    if lone_surrogate(pattern):
        raise InvalidInputError(
            f"pattern {pattern!r} contains a lone surrogate, which UTF-8 cannot hold"
        )
    return pattern


# The most rows one purge batch deletes (and locks) in one statement.
MAX_BATCH_SIZE = 1_000_000


def check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InvalidInputError(
            f"batch_size must be from 1 to {MAX_BATCH_SIZE:,}, got {batch_size!r}"
        )
    return batch_size
