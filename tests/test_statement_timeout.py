"""``statement_timeout=``: a call blocked by a lock held elsewhere ends, with nothing written.

The bound is set for each statement's own transaction (``set_config(...,
true)``), so the pooled session is left as it was; on SQLite it is the busy
timeout of the engine the store builds.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import PostgresHandle, drop_table
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine
from store_kinds import KINDS, store_of_kind

from sqlalchemy_awaitly import (
    ConfigurationError,
    SQLAlchemyKeyValueStore,
    StatementTimeoutError,
)

TIMEOUT = 0.4


@pytest.mark.postgres
@pytest.mark.parametrize("kind", KINDS)
def test_a_call_blocked_by_a_lock_ends_after_the_timeout(
    kind: str, postgres: PostgresHandle, table_name: str, loop: asyncio.AbstractEventLoop
) -> None:
    locker = create_engine(postgres.url)
    try:
        with store_of_kind(
            kind,
            postgres.url,
            loop,
            table_name=table_name,
            statement_timeout=TIMEOUT,
            pool={"pool_size": 1, "max_overflow": 0},
        ) as store:
            store.set("k", "before")
            with locker.connect() as holder:
                # If the bound failed, the server ends the holder, the call goes
                # through, and the test fails instead of hanging.
                holder.execute(text("SET idle_in_transaction_session_timeout = '10s'"))
                holder.execute(text(f"SELECT * FROM {table_name} WHERE key = 'k' FOR UPDATE"))
                started = time.monotonic()
                with pytest.raises(StatementTimeoutError, match="nothing was written"):
                    store.set("k", "blocked")
                waited = time.monotonic() - started
                assert TIMEOUT * 0.9 <= waited < TIMEOUT * 5, waited
                assert store.get("other") is None  # reads on other rows go on
                holder.rollback()
            assert store.get("k") == "before"
            store.set("k", "after")  # unblocked: within the bound
            assert store.get("k") == "after"
            # The bound was the statement's own: the pooled session is as it was.
            engine = store.engine
            sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
            if kind.endswith("asyncpg") or kind.endswith("psycopg_async"):
                return  # their sessions are checked through the sync kinds
            with sync.connect() as conn:
                assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
    finally:
        locker.dispose()
        drop_table(create_engine(postgres.url), table_name)


def test_sqlite_waits_for_a_writer_as_long_as_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    with SQLAlchemyKeyValueStore(f"sqlite:///{path}", statement_timeout=TIMEOUT) as store:
        store.set("k", "before")
        writer = sqlite3.connect(path, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            with pytest.raises(StatementTimeoutError):
                store.set("k", "blocked")
            assert TIMEOUT * 0.9 <= time.monotonic() - started < TIMEOUT * 5
            writer.execute("ROLLBACK")
        finally:
            writer.close()
        assert store.get("k") == "before"


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "5", True, 100_000.0])
def test_a_bad_timeout_is_refused_before_anything_is_built(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="statement_timeout"):
        SQLAlchemyKeyValueStore("sqlite://", statement_timeout=bad)  # type: ignore[arg-type]
