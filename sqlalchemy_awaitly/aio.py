"""The asyncio twin of :mod:`sqlalchemy_awaitly.store`, on an ``AsyncEngine``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Table
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

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
from .dbapi_async import AsyncPsycopg, async_driver
from .ddl import prepare_table
from .errors import ConfigurationError
from .execution import (
    AsyncDirectRunner,
    AsyncEngineRunner,
    connect_async,
    direct_timeout,
    run_on_async_connection,
)
from .schema import DEFAULT_TABLE_NAME
from .statements import Op, Statements
from .telemetry import store_calls
from .telemetry.store_calls import Target, target_of
from .validation import Ttl

T = TypeVar("T")
AsyncTransaction = AsyncConnection | AsyncSession


class AsyncSQLAlchemyKeyValueStore:
    """:class:`~sqlalchemy_awaitly.store.SQLAlchemyKeyValueStore` for asyncio code.

    Same options and behaviour; ``engine=`` takes an ``AsyncEngine``, and
    ``connection=`` an ``AsyncConnection`` or ``AsyncSession``. A bare
    ``sqlite://`` URL uses aiosqlite (install the ``aiosqlite`` extra).
    """

    def __init__(
        self,
        connection_string: str | URL | None = None,
        *,
        engine: AsyncEngine | None = None,
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
        if isinstance(engine, Engine):
            raise ConfigurationError("a sync Engine needs SQLAlchemyKeyValueStore")
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
            asyncio=True,
        )
        self._options = options
        self._owns_engine = engine is None
        if engine is None:
            assert options.url is not None
            engine = create_async_engine(options.url, **options.engine_arguments)
        self.engine: AsyncEngine = engine
        self._calls = calls_for(engine.dialect.name)
        self._lock = asyncio.Lock()
        self._statements: Statements | None = None
        self._ops: dict[str, Op] = {}
        self._runner: AsyncDirectRunner | AsyncEngineRunner | None = None
        self._otel_target: Target
        self._closed = False

    @property
    def table(self) -> Table:
        return self._options.table

    async def setup(self) -> None:
        """Check the table (creating it if allowed) now rather than on the first call."""
        await self._ready()

    async def _ready(self) -> AsyncDirectRunner | AsyncEngineRunner:
        async with self._lock:
            if self._closed:
                raise closed_error()
            if self._runner is None:
                conn = await connect_async(self.engine)
                try:
                    info = await conn.run_sync(
                        prepare_table,
                        self.table,
                        self._options.create_table,
                        self._options.verify_schema,
                    )
                finally:
                    await conn.close()
                statements = Statements(self.table, self.engine.dialect.name, info.naive_utc_expiry)
                label = self._options.table_label
                self._otel_target = target_of(self.engine.url, self.engine.dialect.name, label)
                self._statements = statements
                self._ops = statements.by_name
                self._runner = self._runner_for(statements, label)
            return self._runner

    def _runner_for(
        self, statements: Statements, label: str
    ) -> AsyncDirectRunner | AsyncEngineRunner:
        """As the sync store chooses (``SQLAlchemyKeyValueStore._runner_for``)."""
        timeout = self._options.statement_timeout
        dialect = self.engine.dialect
        driver = async_driver(dialect, self._options.prepare)
        if driver is None or not direct_timeout(dialect, isinstance(driver, AsyncPsycopg), timeout):
            return AsyncEngineRunner(self.engine, label, timeout)
        return AsyncDirectRunner(self.engine, statements, label, driver, timeout)

    async def _run(self, call: Call[T], connection: AsyncTransaction | None) -> T:
        if call.op is None:
            return call.answer_without_io()
        runner = self._runner or await self._ready()
        op = self._ops[call.op]
        watch = store_calls.begin(self._otel_target, op)
        try:
            if connection is None:
                outcome = await runner.run(op, call.params)
            else:
                conn = await self._connection_of(connection)
                label = self._options.table_label
                outcome = await run_on_async_connection(conn, op, call.params, label)
        except BaseException as e:
            if watch is not None:
                store_calls.end(watch, None, e)
            raise
        if watch is not None:
            store_calls.end(watch, outcome, None)
        return call.read(outcome)

    @staticmethod
    async def _connection_of(connection: AsyncTransaction) -> AsyncConnection:
        if isinstance(connection, AsyncSession):
            return await connection.connection()
        if isinstance(connection, AsyncConnection):
            return connection
        raise wrong_connection(
            connection, "an AsyncConnection or AsyncSession", "SQLAlchemyKeyValueStore"
        )

    async def get(self, key: str, *, connection: AsyncTransaction | None = None) -> str | None:
        return await self._run(self._calls.get(key), connection)

    async def set(
        self,
        key: str,
        value: str,
        ttl: Ttl = None,
        *,
        connection: AsyncTransaction | None = None,
    ) -> None:
        await self._run(self._calls.set(key, value, ttl), connection)

    async def delete(
        self, key: str, *, if_value: str | None = None, connection: AsyncTransaction | None = None
    ) -> bool:
        return await self._run(self._calls.delete(key, if_value), connection)

    async def add(
        self,
        key: str,
        value: str,
        ttl: Ttl = None,
        *,
        connection: AsyncTransaction | None = None,
    ) -> bool:
        return await self._run(self._calls.add(key, value, ttl), connection)

    async def add_and_get(
        self, key: str, value: str, ttl: Ttl = None, *, other_key: str
    ) -> tuple[bool, str | None]:
        """As the sync store's: one round trip on psycopg, two calls on other drivers."""
        return await self._run(self._calls.add_and_get(key, value, ttl, other_key), None)

    async def set_guarded(
        self,
        key: str,
        value: str,
        ttl: Ttl = None,
        *,
        guard_key: str,
        guard_value: str,
        connection: AsyncTransaction | None = None,
    ) -> bool:
        call = self._calls.set_guarded(key, value, ttl, guard_key, guard_value)
        return await self._run(call, connection)

    async def delete_guarded(
        self,
        key: str,
        *,
        guard_key: str,
        guard_value: str,
        release: bool = False,
        connection: AsyncTransaction | None = None,
    ) -> bool:
        call = self._calls.delete_guarded(key, guard_key, guard_value, release)
        return await self._run(call, connection)

    async def touch(
        self,
        key: str,
        ttl: Ttl,
        *,
        if_value: str | None = None,
        connection: AsyncTransaction | None = None,
    ) -> bool:
        return await self._run(self._calls.touch(key, ttl, if_value), connection)

    async def exists(self, key: str, *, connection: AsyncTransaction | None = None) -> bool:
        return await self._run(self._calls.exists(key), connection)

    async def keys(
        self, pattern: str = "*", *, connection: AsyncTransaction | None = None
    ) -> list[str]:
        return await self._run(self._calls.keys(pattern), connection)

    async def keys_with_prefix(
        self, prefix: str, *, connection: AsyncTransaction | None = None
    ) -> list[str]:
        return await self._run(self._calls.keys_with_prefix(prefix), connection)

    async def get_many(
        self, keys: Iterable[str], *, connection: AsyncTransaction | None = None
    ) -> dict[str, str]:
        return await self._run(self._calls.get_many(keys), connection)

    async def set_many(
        self,
        items: Mapping[str, str] | Iterable[tuple[str, str]],
        ttl: Ttl = None,
        *,
        connection: AsyncTransaction | None = None,
    ) -> None:
        await self._run(self._calls.set_many(items, ttl), connection)

    async def delete_many(
        self, keys: Iterable[str], *, connection: AsyncTransaction | None = None
    ) -> int:
        return await self._run(self._calls.delete_many(keys), connection)

    async def purge_expired(
        self, batch_size: int = 1000, *, on_batch: Callable[[int], object] | None = None
    ) -> int:
        call = self._calls.purge_batch(batch_size)
        total = 0
        while True:
            removed = await self._run(call, None)
            total += removed
            if on_batch is not None:
                on_batch(total)
            if removed < batch_size:
                return total

    async def stats(self) -> StoreStats:
        counts = await self._run(self._calls.count(), None)
        sizes = await self._run(self._calls.sizes(self._options.table_relation), None)
        return stats_from(counts, sizes)

    async def close(self) -> None:
        """Dispose the engine if this store built it; a caller's engine is left alone."""
        async with self._lock:
            self._closed = True
            self._runner = None
        if self._owns_engine:
            await self.engine.dispose()

    async def __aenter__(self) -> AsyncSQLAlchemyKeyValueStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


AsyncPostgresKeyValueStore = AsyncSQLAlchemyKeyValueStore
