"""Fixtures: a real PostgreSQL server, a real SQLite file, and every store flavour.

The contract suite runs once per backend (PostgreSQL, SQLite) and flavour
(sync, asyncio). Async stores are driven through :class:`SyncView`, which runs
each coroutine on the test's own event loop, so one test body serves both.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pgbouncer_server import LocalPgBouncer, PgBouncerUnavailable, PoolMode, provide_pgbouncer
from postgres_server import LocalPostgres, PostgresUnavailable, provide_postgres
from sqlalchemy import Engine, MetaData, Table, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine

from sqlalchemy_awaitly import AsyncSQLAlchemyKeyValueStore, SQLAlchemyKeyValueStore

# awaitly 1.35's own rows and store calls, captured from Node.js (copied from the
# project's spec so that the repository stands alone).
AWAITLY_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "awaitly-1.35"


class PostgresHandle:
    def __init__(self, url: str, server: LocalPostgres | None) -> None:
        self.url = url
        self.server = server


_servers_used: list[str] = []  # what the run tested against, for its summary


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresHandle]:
    """A real PostgreSQL; in CI a missing server fails the run, elsewhere it skips."""
    try:
        with provide_postgres() as (url, server):
            engine = create_engine(url)
            with engine.connect() as conn:
                version = conn.exec_driver_sql("SHOW server_version").scalar()
            engine.dispose()
            where = f" from {server.bindir}" if server is not None else ""
            _servers_used.append(f"PostgreSQL {version}{where}")
            yield PostgresHandle(url, server)
    except PostgresUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs PostgreSQL and none could be started: {e}")
        pytest.skip(f"no PostgreSQL: {e}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for server in _servers_used:
        terminalreporter.write_line(f"tested against {server}")


@pytest.fixture(scope="session")
def pg_engine(postgres: PostgresHandle) -> Iterator[Engine]:
    engine = create_engine(postgres.url)
    yield engine
    engine.dispose()


@pytest.fixture
def table_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def drop_table(engine: Engine, name: str, schema: str | None = None) -> None:
    with engine.begin() as conn:
        Table(name, MetaData(), schema=schema).drop(conn, checkfirst=True)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


class SyncView:
    """Calls an async store's coroutine methods synchronously on one event loop."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if inspect.iscoroutinefunction(attr):

            def call(*args: Any, **kwargs: Any) -> Any:
                return self._loop.run_until_complete(attr(*args, **kwargs))

            return call
        return attr


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


class PoolWatch:
    """Which connections of one engine's pools are out, whichever way the store took them.

    It keeps every connection record the engine's pools open (the ``connect``
    event, on the engine so it follows ``dispose()``) and asks each whether it
    is in use. ``Pool.checkedout()`` is meaningless once the engine is
    disposed, and a ``checkout`` listener would make the store fall back to
    SQLAlchemy's full checkout (see ``pool_checkout``), so neither is used.
    """

    def __init__(self, engine: Engine | AsyncEngine) -> None:
        from sqlalchemy import event

        sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        self._records: list[Any] = []  # kept alive: a record lost by the store still counts
        event.listen(sync, "connect", lambda dbapi, record: self._records.append(record))

    @property
    def out(self) -> list[Any]:
        return [record for record in dict.fromkeys(self._records) if record.in_use]


def checked_out(engine: Engine | AsyncEngine) -> int:
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    count: int = sync.pool.checkedout()  # type: ignore[attr-defined]
    return count


StoreFactory = Callable[..., Any]


@pytest.fixture(params=["postgresql-sync", "postgresql-async", "sqlite-sync", "sqlite-async"])
def make_store(
    request: pytest.FixtureRequest,
    table_name: str,
    sqlite_url: str,
    loop: asyncio.AbstractEventLoop,
) -> Iterator[StoreFactory]:
    """Builds stores of one backend and flavour; closes them and checks for leaks after."""
    backend, flavour = request.param.split("-")
    url = request.getfixturevalue("postgres").url if backend == "postgresql" else sqlite_url
    made: list[tuple[Any, PoolWatch]] = []

    def factory(**options: Any) -> Any:
        options.setdefault("table_name", table_name)
        if "engine" not in options:
            options.setdefault("connection_string", url)
        if flavour == "sync":
            store: Any = SQLAlchemyKeyValueStore(**options)
        else:
            store = SyncView(AsyncSQLAlchemyKeyValueStore(**options), loop)
        made.append((store, PoolWatch(store.engine)))
        return store

    factory.backend = backend  # type: ignore[attr-defined]
    factory.flavour = flavour  # type: ignore[attr-defined]
    factory.url = url  # type: ignore[attr-defined]
    yield factory
    for store, watch in made:
        store.close()
        # Connections the store kept between calls are back, none leaked.
        assert not watch.out, "a connection was leaked"
    if backend == "postgresql":
        engine = create_engine(url)
        drop_table(engine, table_name)
        engine.dispose()


@pytest.fixture
def store(make_store: StoreFactory) -> Any:
    return make_store()


@pytest.fixture(
    params=[
        "memory-sync",
        "memory-async",
        "postgresql-sync",
        "postgresql-async",
        "sqlite-sync",
        "sqlite-async",
    ]
)
def durable_env(request: pytest.FixtureRequest, table_name: str, sqlite_url: str) -> Iterator[Any]:
    """A store of each kind, with the runner of each flavour."""
    from durable_harness import Env

    from sqlalchemy_awaitly.durable import MemoryStore

    backend, flavour = request.param.split("-")
    loop = asyncio.new_event_loop()
    if backend == "memory":
        memory = MemoryStore()
        yield Env(backend, flavour, memory, memory, loop)
        loop.close()
        return
    url = request.getfixturevalue("postgres").url if backend == "postgresql" else sqlite_url
    kind = SQLAlchemyKeyValueStore if flavour == "sync" else AsyncSQLAlchemyKeyValueStore
    store = kind(url, table_name=table_name)
    view = SyncView(store, loop)
    yield Env(backend, flavour, store, view, loop)
    view.close()
    loop.close()
    if backend == "postgresql":
        engine = create_engine(url)
        drop_table(engine, table_name)
        engine.dispose()


@pytest.fixture
def otel() -> Iterator[Any]:
    """The OpenTelemetry SDK set up as an app sets it up, with in-memory exporters
    (``otel_sdk.py``); taken down after the test."""
    from otel_sdk import sdk_installed

    with sdk_installed() as telemetry:
        yield telemetry


def raw_rows(engine_url: str, sql: str) -> list[Any]:
    engine = create_engine(engine_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)).all())
    finally:
        engine.dispose()


@pytest.fixture(scope="session", autouse=True)
def no_connection_leaks() -> Iterator[None]:
    """After the whole suite, no connection record of any pool is still in use.

    Records are held weakly (the suite opens thousands); a record the store
    lost entirely is caught by the per-store :class:`PoolWatch` instead.
    """
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    records: weakref.WeakSet[Any] = weakref.WeakSet()

    def connect(dbapi_connection: Any, record: Any) -> None:
        records.add(record)

    event.listen(Pool, "connect", connect)
    yield
    event.remove(Pool, "connect", connect)
    out = [record for record in records if record.in_use]
    assert not out, f"{len(out)} pooled connection(s) never returned"


# --- PgBouncer -------------------------------------------------------------------
# A client starved of a server connection errors out after this, rather than hanging.
SETTINGS = {"query_wait_timeout": 10}


def bouncer_or_fail(
    server: PostgresHandle | LocalPostgres | str, pool_mode: PoolMode, **options: Any
) -> Iterator[LocalPgBouncer]:
    """A started PgBouncer; like ``postgres``, in CI a missing one fails, elsewhere it skips."""
    if isinstance(server, PostgresHandle):
        server = server.server or server.url
    options.setdefault("settings", SETTINGS)
    try:
        with provide_pgbouncer(server, pool_mode, **options) as bouncer:
            yield bouncer
    except PgBouncerUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs PgBouncer and none could be started: {e}")
        pytest.skip(f"no PgBouncer: {e}")


bouncer_for = contextlib.contextmanager(bouncer_or_fail)
