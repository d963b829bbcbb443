"""A transactional step on a caller's engine in AUTOCOMMIT is still atomic.

Before, each statement of the step committed alone: a step that wrote a row
and then raised returned ``Err`` while its row stayed. The runner now opens
the step's transaction at the database's default isolation level when the
engine (or the connection) is in AUTOCOMMIT, as it always did for the
store's own engine; SQLAlchemy resets the connection when it goes back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from durable_harness import Tx, workflow
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, func, insert, select
from sqlalchemy.ext.asyncio import create_async_engine

from sqlalchemy_awaitly import AsyncSQLAlchemyKeyValueStore, SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import Err

rows = Table("autocommit_effects", MetaData(), Column("id", Integer, primary_key=True))


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    from databases import empty_postgres_database

    with empty_postgres_database(request.getfixturevalue("postgres").url) as fresh:
        yield fresh


def body(deps: Any) -> Any:
    def charge(conn: Any) -> Any:
        conn.execute(insert(rows).values(id=1))
        raise RuntimeError("declined after the write")

    yield Tx("charge", charge)


def count(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(rows)).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def table(url: str) -> Iterator[None]:
    engine = create_engine(url)
    rows.create(engine)
    yield
    rows.drop(engine)
    engine.dispose()


@pytest.mark.parametrize("how", ["engine", "execution_options"])
def test_sync(url: str, table: None, how: str) -> None:
    if how == "engine":
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
    else:
        engine = create_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    store = SQLAlchemyKeyValueStore(engine=engine)
    try:
        result = durable.run(None, workflow(body, "sync"), id="ac-1", store=store)
        assert isinstance(result, Err) and isinstance(result.cause, RuntimeError)
        assert count(url) == 0  # the write went with the step
        with engine.connect() as conn:  # and the pool's connection is back in AUTOCOMMIT
            conn.execute(insert(rows).values(id=2))
            conn.rollback()
        assert count(url) == 1
    finally:
        store.close()
        engine.dispose()


def test_async(url: str, table: None) -> None:
    async_url = url.replace("+psycopg", "+psycopg_async").replace("sqlite:", "sqlite+aiosqlite:")

    async def go() -> Any:
        engine = create_async_engine(async_url, isolation_level="AUTOCOMMIT")
        store = AsyncSQLAlchemyKeyValueStore(engine=engine)
        try:
            return await durable.run_async(None, workflow(body, "async"), id="ac-2", store=store)
        finally:
            await store.close()
            await engine.dispose()

    result = asyncio.run(go())
    assert isinstance(result, Err) and isinstance(result.cause, RuntimeError)
    assert count(url) == 0
