"""Terminated sessions, forked workers, a crowded pool: the store holds where SQLAlchemy does.

- After every pooled connection is terminated (``pg_terminate_backend``,
  as a server restart does), one failure discards them all: every call
  succeeds, the one that found the failure included.
- A forked child never uses its parent's connections, with or without
  SQLAlchemy's ``dispose(close=False)`` recipe.
- 200 coroutines on a pool of 5 wait their turn as plain SQLAlchemy's do; an
  exhausted pool is ``PoolExhaustedError`` after one ``pool_timeout``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from typing import Any

import pytest
from conftest import PostgresHandle, drop_table
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine
from store_kinds import KINDS, NAMED_KINDS, store_of_kind

from sqlalchemy_awaitly import PoolExhaustedError, SQLAlchemyKeyValueStore

pytestmark = pytest.mark.postgres

POOL = 5


def _terminate(url: str, application_name: str) -> int:
    """End the sessions named ``application_name``; how many ended.

    Waits (up to 10 s each, PostgreSQL 14+) until each backend has exited, so
    its goodbye is on the client's socket. Without the wait a statement could
    reach a backend still on its way out, which then closes the socket with
    the statement unread: the client may get a reset instead of 57P01, and can
    no longer tell that nothing ran (a real restart races the same way).
    """
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ended = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": application_name},
            ).scalars()
            return sum(1 for gone in ended if gone)
    finally:
        engine.dispose()


def _fill_pool(store: Any, loop: asyncio.AbstractEventLoop, count: int) -> None:
    """Open ``count`` connections at once and give them back to the pool."""
    engine = store.engine
    if isinstance(engine, AsyncEngine):

        async def fill() -> None:
            held = [await engine.raw_connection() for _ in range(count)]
            for fairy in held:
                fairy.close()

        loop.run_until_complete(fill())
    else:
        held = [engine.raw_connection() for _ in range(count)]
        for fairy in held:
            fairy.close()


@pytest.mark.parametrize("kind", NAMED_KINDS)
def test_after_mass_termination_every_call_succeeds(
    kind: str, postgres: PostgresHandle, table_name: str, loop: asyncio.AbstractEventLoop
) -> None:
    name = f"aw-{uuid.uuid4().hex[:10]}"
    pool = {"pool_size": POOL, "max_overflow": 0}
    try:
        with store_of_kind(
            kind, postgres.url, loop, table_name=table_name, application_name=name, pool=pool
        ) as store:
            store.set("seed", "v")
            _fill_pool(store, loop, POOL)
            assert _terminate(postgres.url, name) == POOL
            # add is not repeatable: it succeeds only because the server said
            # (57P01) that it ran nothing before the connection went.
            for i in range(2 * POOL):
                assert store.add(f"k{i}", "v") is True
            assert store.get("seed") == "v"
    finally:
        drop_table(create_engine(postgres.url), table_name)


# --- fork ---------------------------------------------------------------------


def _backend_pid(store: SQLAlchemyKeyValueStore) -> int:
    fairy = store.engine.raw_connection()
    try:
        cur = fairy.cursor()
        cur.execute("SELECT pg_backend_pid()")
        pid: int = cur.fetchone()[0]
        return pid
    finally:
        fairy.close()


def _child(store: SQLAlchemyKeyValueStore, recipe: bool, parent_backend: int, out: Any) -> None:
    try:
        if recipe:
            store.engine.dispose(close=False)
        for i in range(300):
            store.set(f"child:{i % 7}", str(i))
            assert store.get(f"child:{i % 7}") == str(i)
        out.send(("ok", _backend_pid(store) != parent_backend))
    except BaseException as e:
        out.send(("error", repr(e)))


@pytest.mark.parametrize("recipe", [False, True], ids=["bare", "dispose-recipe"])
@pytest.mark.parametrize("kind", ["own-psycopg", "caller-psycopg", "caller-psycopg2"])
def test_a_forked_child_never_uses_its_parents_connections(
    kind: str,
    recipe: bool,
    postgres: PostgresHandle,
    table_name: str,
    loop: asyncio.AbstractEventLoop,
) -> None:
    context = multiprocessing.get_context("fork")
    try:
        with store_of_kind(kind, postgres.url, loop, table_name=table_name) as store:
            store.set("parent", "0")
            parent_backend = _backend_pid(store)  # the one pooled connection, open in the parent
            receive, send = context.Pipe(duplex=False)
            child = context.Process(target=_child, args=(store, recipe, parent_backend, send))
            child.start()
            try:
                # Both processes work at once: a shared socket garbles both.
                for i in range(300):
                    store.set("parent", str(i))
                    assert store.get("parent") == str(i)
                assert receive.poll(60), "the child did not report within 60 s"
                assert receive.recv() == ("ok", True)
                child.join(30)
                assert child.exitcode == 0
            finally:
                if child.is_alive():
                    child.kill()
                    child.join(10)
            assert _backend_pid(store) == parent_backend  # the parent's session lived on
            assert store.get("child:6") is not None
    finally:
        drop_table(create_engine(postgres.url), table_name)


def test_dispose_reaches_every_connection_the_store_used(
    postgres: PostgresHandle, table_name: str
) -> None:
    store = SQLAlchemyKeyValueStore(postgres.url, table_name=table_name)
    try:
        store.set("k", "v")
        before = store.engine.pool
        store.engine.dispose()
        assert before.checkedin() == 0  # type: ignore[attr-defined]
        assert store.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert store.get("k") == "v"  # on the new pool
    finally:
        store.close()
        drop_table(create_engine(postgres.url), table_name)


# --- contention ------------------------------------------------------------------

ASYNC_KINDS = ["own-psycopg_async", "own-asyncpg", "caller-psycopg_async", "caller-asyncpg"]


@pytest.mark.parametrize("kind", ASYNC_KINDS)
def test_200_tasks_on_a_small_pool_fare_like_plain_sqlalchemy(
    kind: str, postgres: PostgresHandle, table_name: str, loop: asyncio.AbstractEventLoop
) -> None:
    pool = {"pool_size": POOL, "max_overflow": 0, "pool_timeout": 3}
    try:
        with store_of_kind(kind, postgres.url, loop, table_name=table_name, pool=pool) as view:
            view.set("k", "v")
            store = view._target
            engine: AsyncEngine = store.engine

            async def by_store() -> None:
                for _ in range(5):
                    assert await store.get("k") == "v"

            async def by_sqlalchemy() -> None:
                for _ in range(5):
                    async with engine.connect() as conn:
                        await conn.execute(text("SELECT 1"))

            async def crowd(job: Any) -> list[BaseException]:
                results = await asyncio.gather(*(job() for _ in range(200)), return_exceptions=True)
                return [r for r in results if isinstance(r, BaseException)]

            assert loop.run_until_complete(crowd(by_sqlalchemy)) == []
            assert loop.run_until_complete(crowd(by_store)) == []
    finally:
        drop_table(create_engine(postgres.url), table_name)


@pytest.mark.parametrize("kind", KINDS)
def test_an_exhausted_pool_is_its_own_error_after_one_timeout(
    kind: str, postgres: PostgresHandle, table_name: str, loop: asyncio.AbstractEventLoop
) -> None:
    timeout = 1.0
    pool = {"pool_size": 2, "max_overflow": 0, "pool_timeout": timeout}
    try:
        with store_of_kind(kind, postgres.url, loop, table_name=table_name, pool=pool) as store:
            store.set("k", "v")
            engine = store.engine
            if isinstance(engine, AsyncEngine):
                held: list[Any] = [loop.run_until_complete(engine.connect()) for _ in range(2)]
            else:
                held = [engine.connect() for _ in range(2)]
            try:
                started = time.monotonic()
                with pytest.raises(PoolExhaustedError, match="no pooled connection") as caught:
                    store.get("k")
                waited = time.monotonic() - started
                assert "could not be reached" not in str(caught.value)
                assert timeout * 0.9 <= waited < timeout * 1.9, waited  # once, not twice
            finally:
                for conn in held:
                    closing = conn.close()
                    if closing is not None:
                        loop.run_until_complete(closing)
            assert store.get("k") == "v"
    finally:
        drop_table(create_engine(postgres.url), table_name)


# --- interrupted calls -------------------------------------------------------------


def _wait_for_a_lock_wait(url: str) -> None:
    """Until some backend waits for a lock (bounded: 10 s)."""
    engine = create_engine(url)
    try:
        deadline = time.monotonic() + 10
        with engine.connect() as conn:
            while time.monotonic() < deadline:
                waiting = conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                ).scalar_one()
                if waiting:
                    return
                conn.rollback()
                time.sleep(0.02)
        raise AssertionError("the statement never reached its lock wait")
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["own-psycopg_async", "caller-psycopg_async"])
def test_a_cancelled_call_never_hands_its_statement_to_the_next(
    kind: str, postgres: PostgresHandle, table_name: str, loop: asyncio.AbstractEventLoop
) -> None:
    pool = {"pool_size": 1, "max_overflow": 0}
    locker = create_engine(postgres.url)
    try:
        with store_of_kind(kind, postgres.url, loop, table_name=table_name, pool=pool) as view:
            view.set("k", "before")
            store = view._target
            with locker.connect() as holder:
                holder.execute(text(f"SELECT * FROM {table_name} WHERE key = 'k' FOR UPDATE"))

                async def cancel_a_blocked_call() -> None:
                    task = asyncio.ensure_future(store.set("k", "blocked"))
                    await asyncio.to_thread(_wait_for_a_lock_wait, postgres.url)
                    task.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await task

                loop.run_until_complete(cancel_a_blocked_call())
                holder.rollback()
            # The pool's one connection was busy with the cancelled statement:
            # the next calls get a fresh one and their own answers.
            assert view.get("missing") is None
            view.set("k", "after")
            assert view.get("k") == "after"
    finally:
        locker.dispose()
        drop_table(create_engine(postgres.url), table_name)
