"""What each store method sends and how it reads the answer, shared by sync and asyncio.

A method validates its input here (so bad input never reaches the database),
names the statement to run with its parameters, and says how to turn the
rows into its return value. The sync and asyncio stores only do the I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from .dbapi import Outcome
from .errors import InvalidInputError
from .patterns import KeyScan, scan_for_pattern, scan_for_prefix
from .validation import (
    Ttl,
    check_batch_size,
    check_key,
    check_keys,
    check_pattern,
    check_ttl,
    check_value,
)

T = TypeVar("T")
_NOTHING = Outcome([], 0)


@dataclass(slots=True)
class Call(Generic[T]):
    """One statement to run (``op`` None: nothing to send) and the reader of its outcome."""

    op: str | None
    params: dict[str, Any]
    read: Callable[[Outcome], T]

    def answer_without_io(self) -> T:
        return self.read(_NOTHING)


def text_of(stored: str | bytes) -> str:
    """A stored key or value as text, whatever bytes SQLite holds for it.

    PostgreSQL hands back ``str``. SQLite reads come back as bytes
    (``statements.py``): UTF-8 is decoded; lone surrogates that an earlier
    ``set_many`` stored encoded come back as the lone surrogates they were;
    bytes that are not UTF-8 come back as escaped surrogates (``\\udcff``),
    so that a workflow row holding them reads as corrupt, alone.
    """
    if type(stored) is str:
        return stored
    assert isinstance(stored, bytes)
    try:
        return stored.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return stored.decode("utf-8", "surrogateescape")


def _first_value(outcome: Outcome) -> str | None:
    return text_of(outcome.rows[0][0]) if outcome.rows else None


def _any_row(outcome: Outcome) -> bool:
    return bool(outcome.rows)


def _none(outcome: Outcome) -> None:
    return None


def _first_flag(outcome: Outcome) -> bool:
    return bool(outcome.rows) and bool(outcome.rows[0][0])


def _count_flags(outcome: Outcome) -> int:
    return sum(1 for row in outcome.rows if row[0])


def _pairs(outcome: Outcome) -> dict[str, str]:
    return {text_of(row[0]): text_of(row[1]) for row in outcome.rows}


def _first_column(outcome: Outcome) -> list[str]:
    return [text_of(row[0]) for row in outcome.rows]


def _any_count(outcome: Outcome) -> bool:
    return outcome.rowcount > 0


def _rowcount(outcome: Outcome) -> int:
    return max(outcome.rowcount, 0)


def _held_and_other(
    key: str, value: str, other_key: str, outcome: Outcome
) -> tuple[bool, str | None]:
    """Whether ``key`` holds ``value`` now, and ``other_key``'s value (``add_and_get``)."""
    found = _pairs(outcome)
    return found.get(key) == value, found.get(other_key)


def _first_row(outcome: Outcome) -> tuple[Any, ...]:
    return tuple(outcome.rows[0])


class Calls:
    """The calls of one store, for its dialect (``postgresql`` or ``sqlite``)."""

    def __init__(self, dialect_name: str) -> None:
        self._postgresql = dialect_name == "postgresql"

    def _keys_param(self, keys: Sequence[str]) -> object:
        return list(keys) if self._postgresql else json.dumps(keys)

    def get(self, key: str) -> Call[str | None]:
        return Call("get", {"key": check_key(key)}, _first_value)

    def exists(self, key: str) -> Call[bool]:
        return Call("exists", {"key": check_key(key)}, _any_row)

    def set(self, key: str, value: str, ttl: Ttl) -> Call[None]:
        key = check_key(key)
        params = {"key": key, "value": check_value(key, value), "ttl": check_ttl(ttl)}
        return Call("set", params, _none)

    def delete(self, key: str, if_value: str | None = None) -> Call[bool]:
        key = check_key(key)
        if if_value is None:
            return Call("delete", {"key": key}, _first_flag)
        return Call("delete_if", {"key": key, "value": check_value(key, if_value)}, _first_flag)

    def set_guarded(
        self, key: str, value: str, ttl: Ttl, guard_key: str, guard_value: str
    ) -> Call[bool]:
        key = check_key(key)
        params = {
            "key": key,
            "value": check_value(key, value),
            "ttl": check_ttl(ttl),
            "guard_key": check_key(guard_key),
            "guard_value": check_value(guard_key, guard_value),
        }
        return Call("set_guarded", params, _any_row)

    def delete_guarded(
        self, key: str, guard_key: str, guard_value: str, release: bool = False
    ) -> Call[bool]:
        params = {
            "key": check_key(key),
            "guard_key": check_key(guard_key),
            "guard_value": check_value(guard_key, guard_value),
        }
        if not isinstance(release, bool):
            raise InvalidInputError(f"release must be True or False, got {release!r}")
        return Call("delete_guarded_release" if release else "delete_guarded", params, _any_row)

    def add(self, key: str, value: str, ttl: Ttl) -> Call[bool]:
        key = check_key(key)
        params = {"key": key, "value": check_value(key, value), "ttl": check_ttl(ttl)}
        return Call("add", params, _any_row)

    def add_and_get(
        self, key: str, value: str, ttl: Ttl, other_key: str
    ) -> Call[tuple[bool, str | None]]:
        key, other_key = check_key(key), check_key(other_key)
        if other_key == key:
            raise InvalidInputError(f"add_and_get reads a key other than the one it adds: {key!r}")
        value = check_value(key, value)
        params = {"key": key, "value": value, "ttl": check_ttl(ttl), "other_key": other_key}
        return Call("add_and_get", params, partial(_held_and_other, key, value, other_key))

    def touch(self, key: str, ttl: Ttl, if_value: str | None = None) -> Call[bool]:
        key = check_key(key)
        params: dict[str, Any] = {"match_key": key, "ttl": check_ttl(ttl)}
        if if_value is None:
            return Call("touch", params, _any_count)
        params["match_value"] = check_value(key, if_value)
        return Call("touch_if", params, _any_count)

    def get_many(self, keys: Iterable[str]) -> Call[dict[str, str]]:
        unique = check_keys(keys)
        return Call("get_many" if unique else None, {"keys": self._keys_param(unique)}, _pairs)

    def delete_many(self, keys: Iterable[str]) -> Call[int]:
        unique = check_keys(keys)
        return Call(
            "delete_many" if unique else None, {"keys": self._keys_param(unique)}, _count_flags
        )

    def set_many(
        self, items: Mapping[str, str] | Iterable[tuple[str, str]], ttl: Ttl
    ) -> Call[None]:
        pairs = items.items() if isinstance(items, Mapping) else items
        latest: dict[str, str] = {}
        for key, value in pairs:
            key = check_key(key)
            latest[key] = check_value(key, value)
        seconds = check_ttl(ttl)
        if not latest:
            return Call(None, {}, _none)
        keys, values = list(latest), list(latest.values())
        params: dict[str, Any] = {"ttl": seconds}
        if self._postgresql:
            params.update(keys=keys, values=values)
        else:
            params["items"] = json.dumps([list(kv) for kv in zip(keys, values, strict=True)])
        return Call("set_many", params, _none)

    def keys(self, pattern: str) -> Call[list[str]]:
        return self._scan(scan_for_pattern(check_pattern(pattern)))

    def keys_with_prefix(self, prefix: str) -> Call[list[str]]:
        return self._scan(scan_for_prefix(check_pattern(prefix)))

    def _scan(self, scan: KeyScan) -> Call[list[str]]:
        if scan.exact is not None:
            if not scan.exact:
                return Call(None, {}, _first_column)
            return Call("scan_exact", {"key": scan.exact}, _first_column)
        params: dict[str, Any] = {"lower": scan.lower}
        if scan.upper is not None:
            params["upper"] = scan.upper
        match = scan.like if self._postgresql else scan.glob
        op = "scan_range" if scan.upper is not None else "scan_from"
        if match is not None:
            params["match"] = match
            op += "_match"
        return Call(op, params, _first_column)

    def purge_batch(self, batch_size: int) -> Call[int]:
        return Call("purge_batch", {"batch_size": check_batch_size(batch_size)}, _rowcount)

    def count(self) -> Call[tuple[Any, ...]]:
        return Call("count", {}, _first_row)

    def sizes(self, relation: str) -> Call[tuple[Any, ...]]:
        return Call("sizes", {"relation": relation} if self._postgresql else {}, _first_row)
