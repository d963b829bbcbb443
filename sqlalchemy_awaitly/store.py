"""The key/value store for sync code: awaitly's ``KeyValueStore`` on a SQLAlchemy Engine."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Table, create_engine
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from .base import (
    StoreStats,
    calls_for,
    closed_error,
    stats_from,
    store_options,
    wrong_connection,
)
from .calls import Call
from .config import UNSET, Unset
from .dbapi import sync_driver
from .ddl import prepare_table
from .errors import ConfigurationError
from .execution import (
    DirectRunner,
    EngineRunner,
    connect,
    run_on_connection,
)
from .schema import DEFAULT_TABLE_NAME
from .statements import Op, Statements
from .telemetry import store_calls
from .telemetry.store_calls import Target, target_of
from .validation import Ttl

T = TypeVar("T")
Transaction = Connection | Session


class SQLAlchemyKeyValueStore:
    """Keys and string values with optional TTL, in one table, on PostgreSQL or SQLite.

    Give it your application's ``engine=`` to share its pool (it is never
    disposed here), or a URL / individual options to let the store build and
    own one. Nothing touches the database until the first call (or
    :meth:`setup`). Every method takes ``connection=``: a ``Connection`` or
    ``Session`` whose transaction the call joins, so state commits or rolls
    back with the application's own writes.
    """

    def __init__(
        self,
        connection_string: str | URL | None = None,
        *,
        engine: Engine | None = None,
        host: str | None = None,
        port: int | None = None,
        database: str | None = None,
        user: str | None = None,
        password: str | None = None,
        pool: Mapping[str, Any] | None = None,
        table_name: str = DEFAULT_TABLE_NAME,
        schema: str | None = None,
        create_table: bool = True,
        verify_schema: bool = True,
        prepare_threshold: int | Unset | None = UNSET,
        statement_timeout: float | None = None,
    ) -> None:
        if isinstance(engine, AsyncEngine):
            raise ConfigurationError("an AsyncEngine needs AsyncSQLAlchemyKeyValueStore")
        options = store_options(
            engine=engine,
            connection_string=connection_string,
            host=host,
            port=port,
            database=database,
            user=user,
            password=password,
            pool=pool,
            table_name=table_name,
            schema=schema,
            create_table=create_table,
            verify_schema=verify_schema,
            prepare_threshold=prepare_threshold,
            statement_timeout=statement_timeout,
            asyncio=False,
        )
        self._options = options
        self._owns_engine = engine is None
        if engine is None:
            assert options.url is not None
            engine = create_engine(options.url, **options.engine_arguments)
        self.engine: Engine = engine
        self._calls = calls_for(engine.dialect.name)
        self._lock = threading.Lock()
        self._statements: Statements | None = None
        self._ops: dict[str, Op] = {}
        self._runner: DirectRunner | EngineRunner | None = None
        self._otel_target: Target
        self._closed = False

    @property
    def table(self) -> Table:
        return self._options.table

    def setup(self) -> None:
        """Check the table (creating it if allowed) now rather than on the first call."""
        self._ready()

    def _ready(self) -> DirectRunner | EngineRunner:
        with self._lock:
            if self._closed:
                raise closed_error()
            if self._runner is None:
                with connect(self.engine) as conn:
                    info = prepare_table(
                        conn, self.table, self._options.create_table, self._options.verify_schema
                    )
                statements = Statements(self.table, self.engine.dialect.name, info.naive_utc_expiry)
                label = self._options.table_label
                self._otel_target = target_of(self.engine.url, self.engine.dialect.name, label)
                self._statements = statements
                self._ops = statements.by_name
                self._runner = self._runner_for(statements, label)
            return self._runner

    def _runner_for(self, statements: Statements, label: str) -> DirectRunner | EngineRunner:
        """The direct runner on every driver it knows (each keeps a statement timeout:
        psycopg and psycopg2 send it with the statement, SQLite's is the engine's busy
        timeout); otherwise statements go through a Connection."""
        timeout = self._options.statement_timeout
        driver = sync_driver(self.engine.dialect, self._options.prepare)
        if driver is None:
            return EngineRunner(self.engine, label, timeout)
        return DirectRunner(self.engine, statements, label, driver, timeout)

    def _run(self, call: Call[T], connection: Transaction | None) -> T:
        if call.op is None:
            return call.answer_without_io()
        runner = self._runner or self._ready()
        op = self._ops[call.op]
        watch = store_calls.begin(self._otel_target, op)
        try:
            if connection is None:
                outcome = runner.run(op, call.params)
            else:
                conn = self._connection_of(connection)
                outcome = run_on_connection(conn, op, call.params, self._options.table_label)
        except BaseException as e:
            if watch is not None:
                store_calls.end(watch, None, e)
            raise
        if watch is not None:
            store_calls.end(watch, outcome, None)
        return call.read(outcome)

    @staticmethod
    def _connection_of(connection: Transaction) -> Connection:
        if isinstance(connection, Session):
            return connection.connection()
        if isinstance(connection, Connection):
            return connection
        raise wrong_connection(
            connection, "a Connection or Session", "AsyncSQLAlchemyKeyValueStore"
        )

    def get(self, key: str, *, connection: Transaction | None = None) -> str | None:
        """The value under ``key``, or None if there is none or it has expired."""
        return self._run(self._calls.get(key), connection)

    def set(
        self,
        key: str,
        value: str,
        ttl: Ttl = None,
        *,
        connection: Transaction | None = None,
    ) -> None:
        """Store ``value`` under ``key``; ``ttl`` seconds from now (database clock) it expires."""
        self._run(self._calls.set(key, value, ttl), connection)

    def delete(
        self, key: str, *, if_value: str | None = None, connection: Transaction | None = None
    ) -> bool:
        """Remove ``key`` (only while it holds ``if_value``, if given); True if a live row went."""
        return self._run(self._calls.delete(key, if_value), connection)

    def add(
        self,
        key: str,
        value: str,
        ttl: Ttl = None,
        *,
        connection: Transaction | None = None,
    ) -> bool:
        """Store ``value`` unless a live row holds ``key``; True if stored. One statement."""
        return self._run(self._calls.add(key, value, ttl), connection)

    def add_and_get(
        self, key: str, value: str, ttl: Ttl = None, *, other_key: str
    ) -> tuple[bool, str | None]:
        """``add``, then the value under ``other_key``, in one round trip on psycopg and
        psycopg2 (a message of two statements; two calls on other drivers).

        The first answer is whether ``key`` holds ``value`` afterwards: with a value
        no one else writes (a lease's token) that is whether this call added it, and
        it stays true if the call is sent again after a lost reply. The read is a
        statement of its own, after the add: it sees whatever was committed before
        the add took the row.
        """
        return self._run(self._calls.add_and_get(key, value, ttl, other_key), None)

    def set_guarded(
        self,
        key: str,
        value: str,
        ttl: Ttl = None,
        *,
        guard_key: str,
        guard_value: str,
        connection: Transaction | None = None,
    ) -> bool:
        """``set``, but only while ``guard_key`` (a lease) holds ``guard_value``; True if set.

        One statement, so a lease that changed hands (a stale owner) writes nothing.
        """
        call = self._calls.set_guarded(key, value, ttl, guard_key, guard_value)
        return self._run(call, connection)

    def delete_guarded(
        self,
        key: str,
        *,
        guard_key: str,
        guard_value: str,
        release: bool = False,
        connection: Transaction | None = None,
    ) -> bool:
        """``delete``, but only while ``guard_key`` holds ``guard_value``; True if a row went.

        ``release=True`` deletes the guard row too, in the same statement (a run
        that ends and gives up its lease): both go while the guard holds, neither
        otherwise, and True means the guard held.
        """
        call = self._calls.delete_guarded(key, guard_key, guard_value, release)
        return self._run(call, connection)

    def touch(
        self,
        key: str,
        ttl: Ttl,
        *,
        if_value: str | None = None,
        connection: Transaction | None = None,
    ) -> bool:
        """Give a live ``key`` a new expiry (only while it holds ``if_value``, if given)."""
        return self._run(self._calls.touch(key, ttl, if_value), connection)

    def exists(self, key: str, *, connection: Transaction | None = None) -> bool:
        return self._run(self._calls.exists(key), connection)

    def keys(self, pattern: str = "*", *, connection: Transaction | None = None) -> list[str]:
        """Live keys matching ``pattern``, in byte order; ``*`` is the only wildcard."""
        return self._run(self._calls.keys(pattern), connection)

    def keys_with_prefix(self, prefix: str, *, connection: Transaction | None = None) -> list[str]:
        """Live keys starting with ``prefix`` taken literally (``*`` included)."""
        return self._run(self._calls.keys_with_prefix(prefix), connection)

    def get_many(
        self, keys: Iterable[str], *, connection: Transaction | None = None
    ) -> dict[str, str]:
        """The live keys among ``keys`` with their values, in one statement."""
        return self._run(self._calls.get_many(keys), connection)

    def set_many(
        self,
        items: Mapping[str, str] | Iterable[tuple[str, str]],
        ttl: Ttl = None,
        *,
        connection: Transaction | None = None,
    ) -> None:
        """Upsert many keys in one statement (a repeated key: the last value wins)."""
        self._run(self._calls.set_many(items, ttl), connection)

    def delete_many(self, keys: Iterable[str], *, connection: Transaction | None = None) -> int:
        """Remove ``keys`` in one statement; returns how many live rows went."""
        return self._run(self._calls.delete_many(keys), connection)

    def purge_expired(
        self, batch_size: int = 1000, *, on_batch: Callable[[int], object] | None = None
    ) -> int:
        """Delete expired rows, ``batch_size`` per statement (short locks, bounded WAL).

        ``on_batch`` is called with the running total after each statement.
        """
        call = self._calls.purge_batch(batch_size)
        total = 0
        while True:
            removed = self._run(call, None)
            total += removed
            if on_batch is not None:
                on_batch(total)
            if removed < batch_size:
                return total

    def stats(self) -> StoreStats:
        """Row counts and, on PostgreSQL, table and index sizes."""
        counts = self._run(self._calls.count(), None)
        sizes = self._run(self._calls.sizes(self._options.table_relation), None)
        return stats_from(counts, sizes)

    def close(self) -> None:
        """Dispose the engine if this store built it; a caller's engine is left alone."""
        with self._lock:
            self._closed = True
            self._runner = None
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> SQLAlchemyKeyValueStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


PostgresKeyValueStore = SQLAlchemyKeyValueStore
"""The name awaitly-postgres uses; the store works on SQLite too."""
