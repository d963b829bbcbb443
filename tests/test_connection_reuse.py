"""Every call takes its connection from the pool and gives it back: none is held between calls."""

from __future__ import annotations

import asyncio
import threading

from conftest import PoolWatch, PostgresHandle, drop_table
from sqlalchemy import create_engine

from sqlalchemy_awaitly import AsyncSQLAlchemyKeyValueStore, SQLAlchemyKeyValueStore


def _hammer(store: SQLAlchemyKeyValueStore, threads: int, calls: int) -> list[BaseException]:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(calls):
                store.set(f"t{n}:{i % 5}", "v")
                store.get(f"t{n}:{i % 5}")
        except BaseException as e:  # reported to the test
            errors.append(e)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return errors


def test_own_engine_returns_every_connection_to_the_pool(
    postgres: PostgresHandle, table_name: str
) -> None:
    store = SQLAlchemyKeyValueStore(
        postgres.url, table_name=table_name, pool={"pool_size": 3, "max_overflow": 0}
    )
    pool = store.engine.pool
    watch = PoolWatch(store.engine)
    # More threads than connections: they take turns through the pool.
    assert _hammer(store, threads=6, calls=200) == []
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    assert store.keys("t0:*") == [f"t0:{i}" for i in range(5)]
    store.close()
    assert not watch.out
    drop_table(create_engine(postgres.url), table_name)


def test_nothing_is_kept_on_a_callers_engine_or_with_checkout_checks(
    postgres: PostgresHandle, table_name: str
) -> None:
    engine = create_engine(postgres.url)
    shared = SQLAlchemyKeyValueStore(engine=engine, table_name=table_name)
    pinged = SQLAlchemyKeyValueStore(
        postgres.url, table_name=table_name, pool={"pool_pre_ping": True}
    )
    for store in (shared, pinged):
        assert _hammer(store, threads=3, calls=50) == []
        assert store.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        store.close()
    drop_table(engine, table_name)
    engine.dispose()


def test_close_while_threads_run_leaks_nothing(postgres: PostgresHandle, table_name: str) -> None:
    store = SQLAlchemyKeyValueStore(postgres.url, table_name=table_name, pool={"pool_size": 4})
    store.setup()
    watch = PoolWatch(store.engine)
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                store.get("k")
            except Exception:
                return  # "the store is closed"

    workers = [threading.Thread(target=work) for _ in range(4)]
    for w in workers:
        w.start()
    stop.wait(0.3)
    store.close()
    stop.set()
    for w in workers:
        w.join()
    assert not watch.out
    drop_table(create_engine(postgres.url), table_name)


def test_async_store_with_more_tasks_than_connections(
    postgres: PostgresHandle, table_name: str
) -> None:
    async def scenario() -> None:
        store = AsyncSQLAlchemyKeyValueStore(
            postgres.url,
            table_name=table_name,
            pool={"pool_size": 2, "max_overflow": 0, "pool_timeout": 5},
        )
        watch = PoolWatch(store.engine)

        async def work(n: int) -> None:
            for i in range(30):
                await store.set(f"a{n}", str(i))
                assert await store.get(f"a{n}") == str(i)

        await asyncio.gather(*(work(n) for n in range(8)))
        assert not watch.out
        await store.close()
        assert not watch.out

    asyncio.run(scenario())
    drop_table(create_engine(postgres.url), table_name)
