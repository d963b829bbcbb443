"""Where the store gets its engine, and what it does with one it did not build."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import PostgresHandle, checked_out, drop_table
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from sqlalchemy_awaitly import (
    AsyncSQLAlchemyKeyValueStore,
    ConfigurationError,
    PostgresKeyValueStore,
    SQLAlchemyKeyValueStore,
    TableMissingError,
    create_postgres_persistence,
)


def test_nothing_given_says_what_to_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        SQLAlchemyKeyValueStore()


def test_database_url_is_the_default(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    with SQLAlchemyKeyValueStore() as store:
        store.set("k", "v")
        assert store.engine.url == make_url(sqlite_url)
        assert store.get("k") == "v"


def test_conflicting_options_are_rejected(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    with pytest.raises(ConfigurationError, match="engine"):
        SQLAlchemyKeyValueStore(sqlite_url, engine=engine)
    with pytest.raises(ConfigurationError, match="not both"):
        SQLAlchemyKeyValueStore(sqlite_url, host="localhost")
    with pytest.raises(ConfigurationError, match="unknown pool option"):
        SQLAlchemyKeyValueStore(sqlite_url, pool={"max": 20})
    with pytest.raises(ConfigurationError, match="AsyncEngine"):
        SQLAlchemyKeyValueStore(engine=create_async_engine("sqlite+aiosqlite://"))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not supported"):
        SQLAlchemyKeyValueStore("mysql+pymysql://u@localhost/db")
    engine.dispose()


def test_plain_postgresql_url_means_psycopg(postgres: PostgresHandle) -> None:
    plain = postgres.url.replace("postgresql+psycopg://", "postgresql://")
    with SQLAlchemyKeyValueStore(plain) as store:
        assert store.engine.dialect.driver == "psycopg"
    store = AsyncSQLAlchemyKeyValueStore(plain)
    assert store.engine.dialect.driver == "psycopg"
    asyncio.run(store.close())


def test_individual_options_and_pool(postgres: PostgresHandle, table_name: str) -> None:
    url = make_url(postgres.url)
    with PostgresKeyValueStore(
        host=url.host,
        port=url.port,
        database=url.database,
        user=url.username,
        table_name=table_name,
        pool={"pool_size": 3, "max_overflow": 1, "pool_timeout": 5, "pool_recycle": 600},
    ) as store:
        store.set("k", "v")
        assert store.get("k") == "v"
        assert store.engine.pool.size() == 3  # type: ignore[attr-defined]
        assert store.engine.url.get_driver_name() == "psycopg"
    drop_table(create_engine(postgres.url), table_name)


def test_callers_engine_is_reused_and_never_disposed(
    postgres: PostgresHandle, table_name: str
) -> None:
    engine = create_engine(postgres.url, pool_size=2)
    with SQLAlchemyKeyValueStore(engine=engine, table_name=table_name) as store:
        store.set("k", "v")
        assert store.engine is engine
    # Still usable, and its idle connection was kept (a dispose would drop it).
    assert engine.pool.checkedin() >= 1  # type: ignore[attr-defined]
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT value FROM {table_name}")).scalar() == "v"
    drop_table(engine, table_name)
    engine.dispose()


def test_own_engine_is_disposed_on_close(sqlite_url: str) -> None:
    store = SQLAlchemyKeyValueStore(sqlite_url)
    store.set("k", "v")
    pool = store.engine.pool
    store.close()
    assert store.engine.pool is not pool  # dispose() replaces the pool
    assert checked_out(store.engine) == 0
    with pytest.raises(Exception, match="closed"):
        store.get("k")


def test_async_callers_engine_is_not_disposed(sqlite_url: str) -> None:
    async def scenario() -> None:
        engine = create_async_engine(sqlite_url.replace("sqlite://", "sqlite+aiosqlite://"))
        async with AsyncSQLAlchemyKeyValueStore(engine=engine) as store:
            await store.set("k", "v")
            pool = engine.sync_engine.pool
        assert engine.sync_engine.pool is pool
        async with engine.connect() as conn:
            value = (await conn.execute(text("SELECT value FROM awaitly_workflow_state"))).scalar()
        assert value == "v"
        await engine.dispose()

    asyncio.run(scenario())


def test_create_table_false_never_issues_ddl(make_store: Any) -> None:
    store = make_store(create_table=False)
    with pytest.raises(TableMissingError, match=r"alembic upgrade.*create_table=True"):
        store.get("k")
    with pytest.raises(TableMissingError):
        store.set("k", "v")
    engine = create_engine(make_store.url)
    assert not inspect(engine).has_table(store.table.name)
    engine.dispose()


def test_create_table_false_works_once_the_table_exists(make_store: Any) -> None:
    make_store().setup()
    store = make_store(create_table=False)
    store.set("k", "v")
    assert store.get("k") == "v"


def test_auto_create_is_idempotent_and_uses_the_model(make_store: Any) -> None:
    first = make_store()
    first.setup()
    make_store().setup()
    engine = create_engine(make_store.url)
    insp = inspect(engine)
    assert [c["name"] for c in insp.get_columns(first.table.name)] == [
        "key",
        "value",
        "expires_at",
    ]
    indexes = {i["name"] for i in insp.get_indexes(first.table.name)}
    assert f"idx_{first.table.name}_expires_at" in indexes
    engine.dispose()


def test_custom_schema_on_postgresql(postgres: PostgresHandle, table_name: str) -> None:
    engine = create_engine(postgres.url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA IF NOT EXISTS app_state"))
    with SQLAlchemyKeyValueStore(engine=engine, table_name=table_name, schema="app_state") as store:
        store.set("k", "v")
        assert store.keys("*") == ["k"]
        assert store.stats().rows == 1
    assert inspect(engine).has_table(table_name, schema="app_state")
    drop_table(engine, table_name, schema="app_state")
    engine.dispose()


def test_create_postgres_persistence_fails_fast(sqlite_url: str, tmp_path: Any) -> None:
    with pytest.raises(TableMissingError):
        create_postgres_persistence(sqlite_url, create_table=False)
    persistence = create_postgres_persistence(sqlite_url, prefix="myapp:workflow:")
    assert persistence.prefix == "myapp:workflow:"
    assert persistence.list() == []
    persistence.close()
