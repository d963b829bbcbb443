"""The server committed, the reply was lost: every store operation tells the truth.

A proxy between the store and a real PostgreSQL lets the statement through,
waits for the server's whole reply, drops it and resets the connection. An
operation a repeat answers truly (reads, upserts, token-conditional writes)
is repeated and answers; the others raise ``OutcomeUnknownError``, and in
both cases the database holds what the first run wrote.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import PostgresHandle, drop_table
from fault_proxy import FaultProxy
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from store_kinds import KINDS, store_of_kind

from sqlalchemy_awaitly import OutcomeUnknownError

pytestmark = pytest.mark.postgres

UNKNOWN = object()  # the call must raise OutcomeUnknownError


@dataclass(frozen=True)
class Case:
    setup: Callable[[Any, str], object]
    call: Callable[[Any, str], object]
    expect: object
    # What the database holds afterwards (read on a fresh connection).
    check: Callable[[Any, str], bool]
    marker: Callable[[str], bytes] = lambda key: key.encode()


def _nothing(store: Any, key: str) -> None:
    return None


CASES: dict[str, Case] = {
    "add": Case(_nothing, lambda s, k: s.add(k, "v"), UNKNOWN, lambda s, k: s.get(k) == "v"),
    "delete": Case(
        lambda s, k: s.set(k, "v"), lambda s, k: s.delete(k), UNKNOWN, lambda s, k: not s.exists(k)
    ),
    "delete_if_value": Case(
        lambda s, k: s.set(k, "v"),
        lambda s, k: s.delete(k, if_value="v"),
        UNKNOWN,
        lambda s, k: not s.exists(k),
    ),
    "delete_many": Case(
        lambda s, k: s.set_many({k: "1", k + "b": "2"}),
        lambda s, k: s.delete_many([k, k + "b"]),
        UNKNOWN,
        lambda s, k: s.get_many([k, k + "b"]) == {},
    ),
    "delete_guarded": Case(
        lambda s, k: s.set_many({k: "v", "lease": "tok"}),
        lambda s, k: s.delete_guarded(k, guard_key="lease", guard_value="tok"),
        UNKNOWN,
        lambda s, k: not s.exists(k),
    ),
    "delete_guarded_release": Case(
        lambda s, k: s.set_many({k: "v", "lease": "tok"}),
        lambda s, k: s.delete_guarded(k, guard_key="lease", guard_value="tok", release=True),
        UNKNOWN,
        lambda s, k: not s.exists(k) and not s.exists("lease"),
    ),
    "purge_expired": Case(
        lambda s, k: s.set(k, "v", ttl=60),
        lambda s, k: s.purge_expired(),
        UNKNOWN,
        lambda s, k: s.stats().rows == 0,
        marker=lambda key: b"SKIP LOCKED",
    ),
    "set": Case(
        lambda s, k: s.set(k, "old"),
        lambda s, k: s.set(k, "new"),
        None,
        lambda s, k: s.get(k) == "new",
    ),
    "set_many": Case(
        _nothing,
        lambda s, k: s.set_many({k: "1", k + "b": "2"}),
        None,
        lambda s, k: s.get_many([k, k + "b"]) == {k: "1", k + "b": "2"},
    ),
    "touch": Case(
        lambda s, k: s.set(k, "v", ttl=60), lambda s, k: s.touch(k, None), True, lambda s, k: True
    ),
    "touch_if_value": Case(
        lambda s, k: s.set(k, "v", ttl=60),
        lambda s, k: s.touch(k, None, if_value="v"),
        True,
        lambda s, k: s.exists(k),
    ),
    "set_guarded": Case(
        lambda s, k: s.set("lease", "tok"),
        lambda s, k: s.set_guarded(k, "v", guard_key="lease", guard_value="tok"),
        True,
        lambda s, k: s.get(k) == "v",
    ),
    "add_and_get": Case(  # repeatable: the answer is read, not the add's own
        lambda s, k: s.set(k + ":state", "saved"),
        lambda s, k: s.add_and_get(k, "tok", 60, other_key=k + ":state"),
        (True, "saved"),
        lambda s, k: s.get(k) == "tok",
    ),
    "get": Case(lambda s, k: s.set(k, "v"), lambda s, k: s.get(k), "v", lambda s, k: True),
    "exists": Case(lambda s, k: s.set(k, "v"), lambda s, k: s.exists(k), True, lambda s, k: True),
    "get_many": Case(
        lambda s, k: s.set(k, "v"), lambda s, k: s.get_many([k]), None, lambda s, k: True
    ),
    "keys": Case(lambda s, k: s.set(k, "v"), lambda s, k: s.keys(k + "*"), None, lambda s, k: True),
}
EXPECTED = {"get_many": lambda k: {k: "v"}, "keys": lambda k: [k]}


@pytest.fixture
def proxy(postgres: PostgresHandle) -> Iterator[FaultProxy]:
    url = make_url(postgres.url)
    with FaultProxy(url.host or "127.0.0.1", url.port or 5432) as p:
        yield p


def _expire_all(url: str, table: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {table} SET expires_at = now() - interval '1 hour'"))
    engine.dispose()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(CASES))
def test_a_lost_reply_never_gives_a_wrong_answer(
    kind: str,
    name: str,
    postgres: PostgresHandle,
    proxy: FaultProxy,
    table_name: str,
    loop: asyncio.AbstractEventLoop,
) -> None:
    case = CASES[name]
    if name == "purge_expired" and kind.endswith("asyncpg"):
        pytest.skip("asyncpg prepares in a round trip of its own: the SQL marker hits that")
    key = f"lost:{uuid.uuid4().hex}"
    try:
        with store_of_kind(kind, proxy.url_for(postgres.url), loop, table_name=table_name) as s:
            case.setup(s, key)
            if name == "purge_expired":
                _expire_all(postgres.url, table_name)
            proxy.drop_reply_after(case.marker(key))
            if case.expect is UNKNOWN:
                with pytest.raises(OutcomeUnknownError, match="may or may not"):
                    case.call(s, key)
            else:
                expected = EXPECTED[name](key) if name in EXPECTED else case.expect
                assert case.call(s, key) == expected
            assert proxy.faults_fired == 1
            # What the first, unanswered run wrote is there; the store works on.
            assert case.check(s, key)
    finally:
        drop_table(create_engine(postgres.url), table_name)
