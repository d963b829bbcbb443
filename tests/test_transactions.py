"""A state write can join the caller's transaction and commit or roll back with it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from sqlalchemy_awaitly import (
    AsyncSQLAlchemyKeyValueStore,
    SQLAlchemyKeyValueStore,
    create_state_persistence,
)

BACKENDS = ["postgresql", "sqlite"]


def _url(request: pytest.FixtureRequest, backend: str, sqlite_url: str) -> str:
    return request.getfixturevalue("postgres").url if backend == "postgresql" else sqlite_url


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Engine]:
    """The application's own engine, on each backend; checked for leaks, then disposed."""
    engine = create_engine(_url(request, request.param, sqlite_url))
    yield engine
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    engine.dispose()


def test_connection_commit_and_rollback(engine: Engine, table_name: str) -> None:
    store = SQLAlchemyKeyValueStore(engine=engine, table_name=table_name)
    store.setup()
    with engine.connect() as conn:
        conn.execute(text(f"CREATE TABLE IF NOT EXISTS orders_{table_name} (id int)"))
        conn.commit()
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(text(f"INSERT INTO orders_{table_name} VALUES (1)"))
        store.set("wf:1", "state", connection=conn)
        assert store.get("wf:1", connection=conn) == "state"  # visible inside
        raise RuntimeError("business logic failed")
    assert store.get("wf:1") is None
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO orders_{table_name} VALUES (2)"))
        store.set_many({"wf:2": "a", "wf:3": "b"}, connection=conn)
        assert store.delete("wf:3", connection=conn)
    assert store.keys("wf:*") == ["wf:2"]
    with engine.begin() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM orders_{table_name}")).scalar() == 1
        conn.execute(text(f"DROP TABLE orders_{table_name}"))
        conn.execute(text(f"DROP TABLE {table_name}"))


def test_session_rollback_discards_state(engine: Engine, table_name: str) -> None:
    store = SQLAlchemyKeyValueStore(engine=engine, table_name=table_name)
    persistence = create_state_persistence(store)
    snapshot = {"formatVersion": 1, "steps": {}, "execution": {"status": "running"}}
    with Session(engine) as session:
        persistence.save("run-1", snapshot, connection=session)
        assert persistence.load("run-1", connection=session) is not None
        session.rollback()
    assert persistence.load("run-1") is None
    with Session(engine) as session:
        persistence.save("run-1", snapshot, connection=session)
        session.commit()
    assert persistence.list() == ["run-1"]
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {table_name}"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_async_session_commit_and_rollback(
    request: pytest.FixtureRequest, backend: str, sqlite_url: str, table_name: str
) -> None:
    url = _url(request, backend, sqlite_url).replace("sqlite://", "sqlite+aiosqlite://")

    async def scenario() -> None:
        engine = create_async_engine(url)
        store = AsyncSQLAlchemyKeyValueStore(engine=engine, table_name=table_name)
        async with AsyncSession(engine) as session:
            await store.set("a", "1", connection=session)
            await session.rollback()
        assert await store.get("a") is None
        async with engine.begin() as conn:
            await store.set("b", "2", connection=conn)
            assert await store.keys("*", connection=conn) == ["b"]
        assert await store.get_many(["a", "b"]) == {"b": "2"}
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE {table_name}"))
        await engine.dispose()

    asyncio.run(scenario())


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_leaves_pooled_connections_as_it_found_them(
    request: pytest.FixtureRequest, backend: str, sqlite_url: str, table_name: str
) -> None:
    engine = create_engine(_url(request, backend, sqlite_url), pool_size=1, max_overflow=0)
    store = SQLAlchemyKeyValueStore(engine=engine, table_name=table_name)
    store.set("k", "v")
    assert store.get("k") == "v"
    with engine.connect() as conn:
        # The same pooled connection the store used: back in the engine's own
        # (transactional) mode, so the app's work is not silently autocommitted.
        conn.execute(text(f"INSERT INTO {table_name} (key, value) VALUES ('x', 'y')"))
        assert conn.in_transaction()
        conn.rollback()
    assert store.get("x") is None
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {table_name}"))
    engine.dispose()
