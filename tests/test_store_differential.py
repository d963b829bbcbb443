"""Differential fuzz: random operations with arbitrary input on four stores and a model.

PostgreSQL and SQLite, sync and asyncio, receive the same operations, with
keys, values and patterns drawn from all of Unicode (NUL, lone surrogates,
astral characters, ``%``/``_``/``\\``/``*``) and keys up to past the byte
limit; TTLs are none or an hour, so nothing expires mid-example. Every input
is either refused with the store's own errors by all four before anything is
written, or kept and read back as the model says, in the same order.

Budget: 60 examples of up to 25 operations (about 6,000 store calls), about
15 s here; ``FUZZ_EXAMPLES`` raises it for a longer hunt.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import PostgresHandle, SyncView, drop_table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from sqlalchemy_awaitly import (
    AsyncSQLAlchemyKeyValueStore,
    InvalidInputError,
    SQLAlchemyKeyValueStore,
)
from sqlalchemy_awaitly.validation import MAX_KEY_BYTES

pytestmark = pytest.mark.postgres

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
HOUR = 3600.0

ANY_CHAR = st.characters(codec=None, categories=None)  # every code point, surrogates too
TRICKY = st.sampled_from([*"ab%_\\*?[]:", "\x00", "\ud83d", "\udcff", "é", "\U0001f600", "\uffff"])
SHORT_TEXT = st.text(st.one_of(TRICKY, ANY_CHAR), max_size=6)
LONG_KEY = st.builds(
    lambda n, c: c * n,
    st.integers(MAX_KEY_BYTES // 4 - 2, MAX_KEY_BYTES + 2),
    st.sampled_from("aé😀"),
)
KEY = st.one_of(SHORT_TEXT, SHORT_TEXT, SHORT_TEXT, LONG_KEY)
VALUE = st.one_of(SHORT_TEXT, st.text(max_size=200))
TTL = st.sampled_from([None, HOUR])
KEYS = st.lists(KEY, max_size=4)

OPERATIONS = st.one_of(
    st.tuples(st.just("set"), KEY, VALUE, TTL),
    st.tuples(st.just("add"), KEY, VALUE, TTL),
    st.tuples(st.just("get"), KEY),
    st.tuples(st.just("exists"), KEY),
    st.tuples(st.just("delete"), KEY),
    st.tuples(st.just("delete_if"), KEY, VALUE),
    st.tuples(st.just("touch"), KEY, TTL),
    st.tuples(st.just("set_many"), st.lists(st.tuples(KEY, VALUE), max_size=4), TTL),
    st.tuples(st.just("get_many"), KEYS),
    st.tuples(st.just("delete_many"), KEYS),
    st.tuples(st.just("keys"), SHORT_TEXT),
    st.tuples(st.just("keys_with_prefix"), SHORT_TEXT),
)


def storable(text: str) -> bool:
    """What every backend can hold: no NUL, valid UTF-8."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def good_key(key: str) -> bool:
    return bool(key) and storable(key) and len(key.encode("utf-8")) <= MAX_KEY_BYTES


def matches(pattern: str, key: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, key, flags=re.DOTALL) is not None


def byte_order(keys: Any) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-8"))


class Model:
    """What the store promises, in a dict; None: the input must be refused."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}

    def apply(self, op: tuple[Any, ...]) -> tuple[bool, Any]:
        name, *args = op
        return getattr(self, name)(*args)

    def set(self, key: str, value: str, ttl: Any) -> tuple[bool, Any]:
        if not (good_key(key) and storable(value)):
            return False, None
        self.rows[key] = value
        return True, None

    def add(self, key: str, value: str, ttl: Any) -> tuple[bool, Any]:
        if not (good_key(key) and storable(value)):
            return False, None
        if key in self.rows:
            return True, False
        self.rows[key] = value
        return True, True

    def get(self, key: str) -> tuple[bool, Any]:
        return (True, self.rows.get(key)) if good_key(key) else (False, None)

    def exists(self, key: str) -> tuple[bool, Any]:
        return (True, key in self.rows) if good_key(key) else (False, None)

    def delete(self, key: str) -> tuple[bool, Any]:
        return (True, self.rows.pop(key, None) is not None) if good_key(key) else (False, None)

    def delete_if(self, key: str, value: str) -> tuple[bool, Any]:
        if not (good_key(key) and storable(value)):
            return False, None
        if self.rows.get(key) == value:
            del self.rows[key]
            return True, True
        return True, False

    def touch(self, key: str, ttl: Any) -> tuple[bool, Any]:
        return (True, key in self.rows) if good_key(key) else (False, None)

    def set_many(self, items: list[tuple[str, str]], ttl: Any) -> tuple[bool, Any]:
        if not all(good_key(k) and storable(v) for k, v in items):
            return False, None
        self.rows.update(items)
        return True, None

    def get_many(self, keys: list[str]) -> tuple[bool, Any]:
        if not all(good_key(k) for k in keys):
            return False, None
        return True, {k: self.rows[k] for k in keys if k in self.rows}

    def delete_many(self, keys: list[str]) -> tuple[bool, Any]:
        if not all(good_key(k) for k in keys):
            return False, None
        return True, sum(self.rows.pop(k, None) is not None for k in dict.fromkeys(keys))

    def keys(self, pattern: str) -> tuple[bool, Any]:
        if not storable(pattern):
            return False, None
        return True, byte_order(k for k in self.rows if matches(pattern, k))

    def keys_with_prefix(self, prefix: str) -> tuple[bool, Any]:
        if not storable(prefix):
            return False, None
        return True, byte_order(k for k in self.rows if k.startswith(prefix))


def call(store: Any, op: tuple[Any, ...]) -> tuple[bool, Any]:
    name, *args = op
    try:
        if name == "delete_if":
            return True, store.delete(args[0], if_value=args[1])
        if name in ("set", "add"):
            return True, getattr(store, name)(args[0], args[1], ttl=args[2])
        if name == "touch":
            return True, store.touch(args[0], args[1] or HOUR)
        if name == "set_many":
            return True, store.set_many(args[0], ttl=args[1])
        return True, getattr(store, name)(*args)
    except (InvalidInputError, TypeError):
        return False, None


@pytest.fixture(scope="module")
def stores(postgres: PostgresHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    table = "fuzz_differential"
    sqlite_url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'state.db'}"
    loop = asyncio.new_event_loop()
    made: list[tuple[str, Any, Callable[[], None]]] = []
    for url in (postgres.url, sqlite_url):
        sync = SQLAlchemyKeyValueStore(url, table_name=table)
        made.append((f"{url.split(':')[0]}-sync", sync, sync.close))
        target = AsyncSQLAlchemyKeyValueStore(url, table_name=table + "_async")
        view = SyncView(target, loop)
        made.append((f"{url.split(':')[0]}-async", view, view.close))
    yield made
    for _, _, close in made:
        close()
    loop.close()
    engine = create_engine(postgres.url)
    drop_table(engine, table)
    drop_table(engine, table + "_async")
    engine.dispose()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(operations=st.lists(OPERATIONS, max_size=25))
def test_every_store_does_what_the_model_does(stores: Any, operations: list[Any]) -> None:
    for _, store, _ in stores:
        store.delete_many(store.keys("*"))
    model = Model()
    for op in operations:
        expected = model.apply(op)
        for name, store, _ in stores:
            got = call(store, op)
            assert got == expected, (name, op)
    for name, store, _ in stores:
        assert store.get_many(list(model.rows)) == model.rows, name
        assert store.keys("*") == byte_order(model.rows), name
