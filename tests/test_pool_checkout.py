"""The store's own checkout takes the pool's record only when nothing could tell.

Taking a record directly (``pool_checkout``) skips SQLAlchemy's proxy,
events and reset; these tests show when it is used, that every listener,
``pool_pre_ping`` and debug echo still get the full checkout, and that the
pool's accounting, invalidation and in-use marks stay what SQLAlchemy's own
checkout leaves. The faults themselves (restarts, fork, lost replies, an
exhausted pool) run through it in their own tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import PostgresHandle
from psycopg import pq
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool, QueuePool

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, StoreUnavailableError
from sqlalchemy_awaitly.dbapi import Psycopg
from sqlalchemy_awaitly.pool_checkout import Checkouts, Held, records_supported
from sqlalchemy_awaitly.pool_guards import guard_pool

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(postgres: PostgresHandle) -> Iterator[Engine]:
    engine = create_engine(postgres.url, pool_size=2, max_overflow=0, pool_timeout=2)
    yield engine
    engine.dispose()


def _checkouts(engine: Engine) -> Checkouts:
    return Checkouts(engine, guard_pool(engine), Psycopg(None).in_transaction)


def _backend(held: Held) -> int:
    pid: int = held.connection.info.backend_pid
    return pid


def test_this_sqlalchemy_has_what_the_direct_checkout_uses() -> None:
    """Fails, rather than the store silently slowing down, if an upgrade removes it."""
    assert records_supported(QueuePool(lambda: None))
    assert not records_supported(NullPool(lambda: None))


def test_a_plain_pool_hands_out_records_marked_in_use(engine: Engine) -> None:
    checkouts = _checkouts(engine)
    held = checkouts.take()
    try:
        assert held._proxy is None and held._record is not None
        assert held._record.in_use
        assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    finally:
        held.release()
    assert not held._record.in_use
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_the_store_own_engine_takes_records(postgres: PostgresHandle, table_name: str) -> None:
    store = SQLAlchemyKeyValueStore(postgres.url, table_name=table_name)
    try:
        store.set("k", "v")
        runner: Any = store._ready()
        held = runner._checkouts.take()
        try:
            assert held._proxy is None
        finally:
            held.release()
    finally:
        store.close()


def _listener_on(engine: Engine, name: str, seen: list[str]) -> None:
    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        seen.append(name)

    def on_reset(dbapi_connection: Any, record: Any, reset_state: Any) -> None:
        seen.append(name)

    def on_checkin(dbapi_connection: Any, record: Any) -> None:
        seen.append(name)

    listener = {"checkout": on_checkout, "reset": on_reset, "checkin": on_checkin}[name]
    event.listen(engine, name, listener)


@pytest.mark.parametrize("name", ["checkout", "reset"])
def test_a_listener_gets_the_full_checkout_on_every_call(
    postgres: PostgresHandle, table_name: str, name: str
) -> None:
    engine = create_engine(postgres.url)
    seen: list[str] = []
    _listener_on(engine, name, seen)
    store = SQLAlchemyKeyValueStore(engine=engine, table_name=table_name)
    try:
        store.set("k", "v")
        before = len(seen)
        for _ in range(5):
            assert store.get("k") == "v"
        assert len(seen) - before == 5
    finally:
        store.close()
        engine.dispose()


def test_checkin_listeners_hear_the_direct_checkout(engine: Engine) -> None:
    seen: list[str] = []
    _listener_on(engine, "checkin", seen)
    held = _checkouts(engine).take()
    assert held._record is not None
    held.release()
    assert seen == ["checkin"]


@pytest.mark.parametrize(
    "options", [{"pool_pre_ping": True}, {"echo_pool": "debug"}], ids=["pre-ping", "echo"]
)
def test_pre_ping_and_debug_echo_get_the_full_checkout(
    postgres: PostgresHandle, options: dict[str, Any]
) -> None:
    engine = create_engine(postgres.url, **options)
    try:
        held = _checkouts(engine).take()
        assert held._proxy is not None
        held.release()
    finally:
        engine.dispose()


def test_a_pooled_connection_keeps_one_holder_until_it_reconnects(postgres: PostgresHandle) -> None:
    """One :class:`Held` per pooled connection, not one per call; a reconnected record,
    or another store's checkouts on the same engine, get their own."""
    engine = create_engine(postgres.url, pool_size=1, max_overflow=0, pool_timeout=2)
    try:
        checkouts = _checkouts(engine)
        first = checkouts.take()
        first.release()
        again = checkouts.take()
        assert again is first
        again.invalidate(RuntimeError("the server dropped it"))
        again.release()
        fresh = checkouts.take()
        assert fresh is not first and fresh.connection is not first.connection
        assert fresh.connection is fresh._record.driver_connection  # type: ignore[union-attr]
        fresh.release()
        other = Checkouts(engine, guard_pool(engine), Psycopg(None).in_transaction)
        theirs = other.take()
        assert theirs is not fresh and theirs.connection is fresh.connection
        theirs.release()
    finally:
        engine.dispose()


def test_a_connection_handed_back_inside_a_transaction_is_closed(engine: Engine) -> None:
    checkouts = _checkouts(engine)
    held = checkouts.take()
    first = _backend(held)
    held.connection.autocommit = True
    held.connection.execute("BEGIN")
    assert held.connection.pgconn.transaction_status == pq.TransactionStatus.INTRANS
    held.release()
    again = checkouts.take()
    try:
        # The same record, reconnected: no transaction reaches the next call.
        assert _backend(again) != first
        assert again.connection.pgconn.transaction_status == pq.TransactionStatus.IDLE
    finally:
        again.release()


def test_one_dropped_connection_replaces_every_older_one(engine: Engine) -> None:
    checkouts = _checkouts(engine)
    a, b = checkouts.take(), checkouts.take()
    old = {_backend(a), _backend(b)}
    a.invalidate(RuntimeError("the server dropped it"))
    a.release()
    b.release()
    c, d = checkouts.take(), checkouts.take()
    try:
        assert not old & {_backend(c), _backend(d)}
    finally:
        c.release()
        d.release()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def _refusing(engine: Engine) -> dict[str, bool]:
    """A switch: while ``on``, new connections fail at SQLAlchemy's ``do_connect`` hook."""
    refuse = {"on": False}

    @event.listens_for(engine, "do_connect")
    def connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        if refuse["on"]:
            raise OSError("connection refused (injected at do_connect)")
        return None

    return refuse


def test_a_failed_reconnect_gives_the_record_back(engine: Engine) -> None:
    """The pool keeps its size: the record returns, empty, and connects next time."""
    refuse = _refusing(engine)
    checkouts = _checkouts(engine)
    held = checkouts.take()
    held.invalidate(RuntimeError("gone"))
    held.release()
    refuse["on"] = True
    with pytest.raises(OSError):
        checkouts.take()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    refuse["on"] = False
    for _ in range(3):  # pool_size 2, no overflow: nothing was lost
        again = checkouts.take()
        again.release()


def test_the_store_reports_a_failed_reconnect_as_unreachable(
    postgres: PostgresHandle, table_name: str
) -> None:
    engine = create_engine(postgres.url, pool_size=1, max_overflow=0, pool_timeout=2)
    store = SQLAlchemyKeyValueStore(engine=engine, table_name=table_name)
    refuse = _refusing(engine)
    try:
        store.set("k", "v")
        with engine.connect() as conn:
            conn.invalidate()  # the pool's only connection: the store must reconnect
        refuse["on"] = True
        with pytest.raises(StoreUnavailableError):
            store.get("k")
        refuse["on"] = False
        assert store.get("k") == "v"  # the pool of one still has its connection slot
    finally:
        store.close()
        engine.dispose()
