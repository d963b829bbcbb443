"""Every driver the store knows runs its calls on the pooled driver connection directly.

What that must keep: the caller's connections come back as they were lent
(autocommit off again, no transaction left open), and a statement the
database refuses raises the same SQLAlchemy error class as the Connection
path would (asyncpg's and aiosqlite's errors are translated by SQLAlchemy's
adapters). What it gives up, as documented: engine-level cursor events do
not see these calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PostgresHandle, SyncView, drop_table
from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sqlalchemy_awaitly import AsyncSQLAlchemyKeyValueStore, SQLAlchemyKeyValueStore

DRIVERS = ["psycopg", "psycopg2", "pysqlite", "psycopg_async", "asyncpg", "aiosqlite"]
ASYNC = {"psycopg_async", "asyncpg", "aiosqlite"}
TABLE = "direct_path_state"
# A refusal the store cannot see coming: its own validation lets "forbidden" through.
DDL = (
    f'CREATE TABLE {TABLE} (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL '
    "CHECK (value <> 'forbidden'), expires_at TIMESTAMP WITH TIME ZONE)"
)
SQLITE_DDL = (
    f"CREATE TABLE {TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL "
    "CHECK (value <> 'forbidden'), expires_at TIMESTAMP)"
)


def _url(driver: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if driver in ("pysqlite", "aiosqlite"):
        return f"sqlite+{driver}:///{tmp_path / 'state.db'}"
    handle: PostgresHandle = request.getfixturevalue("postgres")
    name = "psycopg" if driver == "psycopg_async" else driver
    return make_url(handle.url).set(drivername=f"postgresql+{name}").render_as_string(False)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(params=DRIVERS)
def caller(
    request: pytest.FixtureRequest, tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> Iterator[tuple[Engine | AsyncEngine, Any]]:
    """(the caller's engine, one connection in its pool; a store on it)."""
    driver: str = request.param
    url = _url(driver, request, tmp_path)
    sqlite = driver in ("pysqlite", "aiosqlite")
    sync_url = make_url(url).set(drivername="sqlite" if sqlite else "postgresql+psycopg")
    admin = create_engine(sync_url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))
        conn.execute(text(SQLITE_DDL if sqlite else DDL))
    options: dict[str, Any] = {"table_name": TABLE, "create_table": False, "verify_schema": False}
    engine: Engine | AsyncEngine
    if driver in ASYNC:
        engine = create_async_engine(url, pool_size=1, max_overflow=0)
        store: Any = SyncView(AsyncSQLAlchemyKeyValueStore(engine=engine, **options), loop)
    else:
        engine = create_engine(url, pool_size=1, max_overflow=0)
        store = SQLAlchemyKeyValueStore(engine=engine, **options)
    try:
        yield engine, store
    finally:
        store.close()
        if isinstance(engine, AsyncEngine):
            loop.run_until_complete(engine.dispose())
        else:
            engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))
        admin.dispose()


def test_calls_run_past_the_connection_layer(caller: tuple[Engine | AsyncEngine, Any]) -> None:
    engine, store = caller
    store.setup()  # its catalog reads go through a Connection
    seen: list[str] = []
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    event.listen(sync_engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    store.set("k", "v")
    assert store.get("k") == "v"
    assert seen == []  # documented in docs/internals.md


def test_the_callers_connection_comes_back_as_it_was_lent(
    caller: tuple[Engine | AsyncEngine, Any], loop: asyncio.AbstractEventLoop
) -> None:
    """The pool holds one connection, so the caller's next transaction runs on the
    connection the store used: if autocommit were left on, its rollback would keep
    the row."""
    engine, store = caller
    store.set("k", "v")
    assert store.delete("k") is True
    insert = text(f"INSERT INTO {TABLE} (key, value) VALUES ('mine', 'x')")
    count = text(f"SELECT count(*) FROM {TABLE}")
    if isinstance(engine, AsyncEngine):

        async def roll_back() -> int:
            async with engine.connect() as conn:
                await conn.execute(insert)
                await conn.rollback()
                return int((await conn.execute(count)).scalar_one())

        assert loop.run_until_complete(roll_back()) == 0
    else:
        with engine.connect() as conn:
            conn.execute(insert)
            conn.rollback()
            assert conn.execute(count).scalar_one() == 0
    assert store.get("k") is None  # and the store's next call is fine


def test_a_refused_statement_raises_what_the_connection_path_raises(
    caller: tuple[Engine, Any],
) -> None:
    _, store = caller
    with pytest.raises(exc.IntegrityError):
        store.set("k", "forbidden")
    store.set("k", "allowed")  # the connection is usable after it
    assert store.get("k") == "allowed"


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_stores_own_engine_works_on_every_driver(
    driver: str,
    table_name: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Its connect timeout goes by each driver's name (asyncpg's is ``timeout``)."""
    url = _url(driver, request, tmp_path)
    options: dict[str, Any] = {"table_name": table_name}
    store: Any = (
        SyncView(AsyncSQLAlchemyKeyValueStore(url, **options), loop)
        if driver in ASYNC
        else SQLAlchemyKeyValueStore(url, **options)
    )
    try:
        store.set("k", "v")
        assert store.get("k") == "v"
        assert store.delete("k") is True
    finally:
        store.close()
        if driver not in ("pysqlite", "aiosqlite"):
            drop_table(request.getfixturevalue("pg_engine"), table_name)


def test_an_app_without_psycopg_engines_never_loads_psycopg(tmp_path: Path) -> None:
    # A fifth of the package's import time; SQLite and the other drivers do without it.
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable\n"
        f"store = SQLAlchemyKeyValueStore('sqlite:///{tmp_path / 'probe.db'}')\n"
        "store.set('k', 'v'); assert store.get('k') == 'v'\n"
        "durable.run(None, lambda step, deps: step(lambda: 1, key='s'), id='w', store=store)\n"
        "store.close()\n"
        "print('psycopg' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
