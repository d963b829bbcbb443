"""purge_expired on PostgreSQL: its unflushed commit is its own, and it never waits."""

from __future__ import annotations

import threading

from conftest import PostgresHandle, drop_table
from sqlalchemy import create_engine, text

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore


def test_the_purge_turns_off_the_commit_flush_for_its_own_transactions_only(
    postgres: PostgresHandle, table_name: str
) -> None:
    engine = create_engine(postgres.url, pool_size=1, max_overflow=0)
    store = SQLAlchemyKeyValueStore(engine=engine, table_name=table_name)
    try:
        store.setup()
        with engine.begin() as conn:
            conn.execute(
                text(
                    f"INSERT INTO {table_name} SELECT 'old:' || i, 'x', now() - interval '1 hour' "
                    "FROM generate_series(1, 2500) AS i"
                )
            )
        assert store.purge_expired(batch_size=1000) == 2500
        with engine.connect() as conn:  # the pool's one connection: the purge's
            assert conn.execute(text("SHOW synchronous_commit")).scalar_one() == "on"
    finally:
        store.close()
        drop_table(engine, table_name)
        engine.dispose()


def test_a_row_another_transaction_holds_is_left_and_the_purge_does_not_wait(
    postgres: PostgresHandle, table_name: str
) -> None:
    store = SQLAlchemyKeyValueStore(postgres.url, table_name=table_name)
    engine = create_engine(postgres.url)
    try:
        store.set("held", "x", ttl=0.001)
        store.set("free", "x", ttl=0.001)
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(0.01)"))
            conn.execute(text(f"SELECT 1 FROM {table_name} WHERE key = 'held' FOR UPDATE"))
            done = threading.Event()
            removed: list[int] = []

            def purge() -> None:
                removed.append(store.purge_expired())
                done.set()

            threading.Thread(target=purge, daemon=True).start()
            assert done.wait(10), "the purge waited for a row lock"
            assert removed == [1]
            conn.rollback()
        assert store.purge_expired() == 1  # the held row, once free
    finally:
        store.close()
        drop_table(engine, table_name)
        engine.dispose()
