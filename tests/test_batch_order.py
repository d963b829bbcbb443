"""Batches lock their rows in key order, so concurrent batches never deadlock.

Two threads write and delete the same keys, one in ascending and one in
descending order, for a few seconds. PostgreSQL's own deadlock counter for
the database must not move (the store would repeat a deadlocked statement,
so the error alone would not show it).
"""

from __future__ import annotations

import threading
import time

import pytest
from conftest import PostgresHandle, drop_table
from sqlalchemy import create_engine, text

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

KEYS = [f"batch:{i:04d}" for i in range(300)]
SECONDS = 3.0
MAX_ROUNDS = 400


def _deadlocks(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            count = conn.execute(
                text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
            return int(count)
    finally:
        engine.dispose()


def test_opposite_order_batches_never_deadlock(postgres: PostgresHandle, table_name: str) -> None:
    stores = [SQLAlchemyKeyValueStore(postgres.url, table_name=table_name) for _ in range(2)]
    stores[0].setup()
    errors: list[BaseException] = []
    rounds = [0, 0]
    before = _deadlocks(postgres.url)

    def work(n: int) -> None:
        keys = KEYS if n == 0 else KEYS[::-1]
        store = stores[n]
        deadline = time.monotonic() + SECONDS
        try:
            while time.monotonic() < deadline and rounds[n] < MAX_ROUNDS:
                rounds[n] += 1
                store.set_many({k: str(rounds[n]) for k in keys})
                store.set_many([(k, "again") for k in keys[: len(keys) // 2]])
                store.delete_many(keys)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(SECONDS + 60)
        assert not any(t.is_alive() for t in threads), "a batch hung"
        assert errors == []
        assert min(rounds) > 5, rounds
        # The statistics collector reports with a short delay: wait for it, bounded.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and _deadlocks(postgres.url) == before:
            time.sleep(0.1)
        assert _deadlocks(postgres.url) == before
    finally:
        for store in stores:
            store.close()
        drop_table(create_engine(postgres.url), table_name)
