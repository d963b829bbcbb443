"""Checks on caller input, done before any SQL is built or sent."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

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


def check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key must be str, got {type(key).__name__}")
    if not key:
        raise InvalidInputError("key must not be empty")
    if "\x00" in key:
        raise InvalidInputError(f"key {key!r} contains a NUL character")
    return key


def check_value(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"value for key {key!r} must be str, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInputError(
            f"value for key {key!r} contains a NUL character, which PostgreSQL text cannot hold"
        )
    return value


def check_ttl(ttl: object) -> float | None:
    """Return the TTL in seconds as a float, or None for 'never expires'."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"ttl must be a number of seconds or None, got {type(ttl).__name__}")
    seconds = float(ttl)
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
    return pattern


def check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size
