"""Running the store's statements: on the pool's driver connection, or on a Connection.

Most of the cost of a key/value call through SQLAlchemy is not SQL: it is the
transaction SQLAlchemy opens around every ``Connection.execute`` (BEGIN and
ROLLBACK round trips) and the per-call statement handling. For psycopg the
store compiles each statement once and runs it in autocommit mode on the
pool's own driver connection, then leaves that connection exactly as it
found it. Other drivers (SQLite) go through an ``AUTOCOMMIT`` Connection.
Inside a caller's transaction, statements run on the caller's Connection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn, cast

import psycopg
from sqlalchemy import exc
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.util import greenlet_spawn

from .errors import StoreUnavailableError, TableMissingError
from .idle import IdleConnections
from .statements import Op, Statements

Rows = list[Sequence[Any]]


class Outcome(NamedTuple):
    rows: Rows
    rowcount: int


@dataclass(frozen=True)
class CompiledOp:
    sql: str
    fixed_params: Mapping[str, Any]


def uses_psycopg(dialect: Dialect) -> bool:
    return dialect.name == "postgresql" and dialect.driver == "psycopg"


def compile_ops(statements: Statements, dialect: Dialect) -> dict[Op, CompiledOp]:
    """Compile every statement once; keep any parameters SQLAlchemy fixed itself."""
    compiled: dict[Op, CompiledOp] = {}
    for op in statements.all_ops():
        c = cast(ClauseElement, op.statement).compile(dialect=dialect)
        fixed = {k: v for k, v in c.params.items() if v is not None}
        compiled[op] = CompiledOp(c.string, fixed)
    return compiled


MIGRATE_HINT = "run the migrations (alembic upgrade heads)"


def missing_table_message(table: str) -> str:
    return (
        f"the table {table} does not exist: {MIGRATE_HINT} "
        "or create the store with create_table=True"
    )


def _is_missing_table(error: BaseException) -> bool:
    orig = getattr(error, "orig", error)
    sqlstate = getattr(orig, "sqlstate", None)
    return sqlstate == "42P01" or "no such table" in str(orig)


def translate(error: Exception, table: str) -> Exception:
    """Map a driver or SQLAlchemy error to what the store raises."""
    if _is_missing_table(error):
        return TableMissingError(missing_table_message(table))
    return error


def unavailable(error: Exception) -> StoreUnavailableError:
    orig = getattr(error, "orig", error)
    return StoreUnavailableError(f"the database could not be reached: {orig}".strip())


def outcome_of(result: Any, returns_rows: bool) -> Outcome:
    rows: Rows = list(result.all()) if returns_rows else []
    return Outcome(rows, result.rowcount)


def _psycopg_params(compiled: CompiledOp, params: Mapping[str, Any]) -> Mapping[str, Any]:
    return {**compiled.fixed_params, **params} if compiled.fixed_params else params


def _wrap_psycopg(error: Exception, compiled: CompiledOp, dialect: Dialect) -> Exception:
    wrapped = exc.DBAPIError.instance(
        compiled.sql, None, error, psycopg.Error, dialect=dialect, ismulti=False
    )
    return wrapped


_CURSOR = "sqlalchemy_awaitly.cursor"


def _cursor_of(fairy: PoolProxiedConnection, conn: Any) -> Any:
    """A cursor kept with the pooled (sync or async) connection: a new one per call costs ~10 us."""
    cur = fairy.info.get(_CURSOR)
    if cur is None or cur.connection is not conn or cur.closed:
        cur = fairy.info[_CURSOR] = conn.cursor()
    return cur


def _execute(cur: Any, compiled: CompiledOp, args: Mapping[str, Any], rows: bool) -> Outcome:
    cur.execute(compiled.sql, args)
    return Outcome(cur.fetchall() if rows else [], cur.rowcount)


async def _execute_async(
    cur: Any, compiled: CompiledOp, args: Mapping[str, Any], rows: bool
) -> Outcome:
    await cur.execute(compiled.sql, args)
    return Outcome(await cur.fetchall() if rows else [], cur.rowcount)


class PsycopgRunner:
    """Runs compiled statements on the pool's psycopg connections, in autocommit."""

    def __init__(
        self, engine: Engine, statements: Statements, table: str, keep_connections: bool
    ) -> None:
        self._pool = engine.pool
        self._dialect = engine.dialect
        self._compiled = compile_ops(statements, engine.dialect)
        self._table = table
        self._idle = IdleConnections(engine.pool, keep_connections, threads_wait_here=True)

    def _checkout(self) -> PoolProxiedConnection:
        fairy = self._idle.take_or_wait()
        if fairy is not None:
            return fairy
        try:
            return self._pool.connect()
        except Exception as e:
            raise unavailable(e) from e

    def close(self) -> None:
        """Give every kept connection back to the pool."""
        for fairy in self._idle.drain():
            fairy.close()

    def release_idle(self) -> None:
        """Give the kept connections back to the pool, but go on keeping later ones."""
        for fairy in self._idle.take_all():
            fairy.close()

    def run(self, op: Op, params: Mapping[str, Any]) -> Outcome:
        compiled = self._compiled[op]
        args = _psycopg_params(compiled, params)
        for attempt in (1, 2):
            fairy = self._checkout()
            try:
                conn: psycopg.Connection[Any] = fairy.driver_connection  # type: ignore[assignment]
                cur = _cursor_of(fairy, conn)
                if conn.autocommit:  # the store's own engine: nothing to switch
                    return _execute(cur, compiled, args, op.returns_rows)
                conn.autocommit = True
                try:
                    return _execute(cur, compiled, args, op.returns_rows)
                finally:
                    if not conn.broken:
                        conn.autocommit = False
            except psycopg.Error as e:
                if conn.broken:
                    # A connection the server dropped (restart, idle timeout):
                    # the statement never reached a live server, so run it once
                    # more on a fresh connection instead of pinging every checkout.
                    fairy.invalidate(e)
                    if attempt == 1:
                        continue
                    raise unavailable(e) from e
                raise translate(_wrap_psycopg(e, compiled, self._dialect), self._table) from e
            finally:
                if not self._idle.keep(fairy):
                    fairy.close()
        raise AssertionError("unreachable")


class AsyncPsycopgRunner:
    """The asyncio twin of :class:`PsycopgRunner`."""

    def __init__(
        self, engine: AsyncEngine, statements: Statements, table: str, keep_connections: bool
    ) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        self._compiled = compile_ops(statements, engine.dialect)
        self._table = table
        self._idle = IdleConnections(
            engine.sync_engine.pool, keep_connections, threads_wait_here=False
        )

    async def _checkout(self) -> PoolProxiedConnection:
        fairy = self._idle.take()
        if fairy is not None:
            return fairy
        try:
            return await self._engine.raw_connection()
        except Exception as e:
            raise unavailable(e) from e

    async def release_idle(self) -> None:
        for fairy in self._idle.take_all():
            await greenlet_spawn(fairy.close)

    async def close(self) -> None:
        for fairy in self._idle.drain():
            await greenlet_spawn(fairy.close)

    async def run(self, op: Op, params: Mapping[str, Any]) -> Outcome:
        compiled = self._compiled[op]
        args = _psycopg_params(compiled, params)
        for attempt in (1, 2):
            fairy = await self._checkout()
            try:
                conn: psycopg.AsyncConnection[Any] = fairy.driver_connection  # type: ignore[assignment]
                cur = _cursor_of(fairy, conn)  # AsyncConnection.cursor() is sync too
                if conn.autocommit:
                    return await _execute_async(cur, compiled, args, op.returns_rows)
                await conn.set_autocommit(True)
                try:
                    return await _execute_async(cur, compiled, args, op.returns_rows)
                finally:
                    if not conn.broken:
                        await conn.set_autocommit(False)
            except psycopg.Error as e:
                if conn.broken:
                    await greenlet_spawn(fairy.invalidate, e)
                    if attempt == 1:
                        continue
                    raise unavailable(e) from e
                raise translate(_wrap_psycopg(e, compiled, self._dialect), self._table) from e
            finally:
                if not self._idle.keep(fairy):
                    await greenlet_spawn(fairy.close)
        raise AssertionError("unreachable")


class EngineRunner:
    """Runs statements on an ``AUTOCOMMIT`` Connection of the engine (non-psycopg drivers)."""

    def __init__(self, engine: Engine, table: str) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._table = table

    def close(self) -> None:
        """Nothing to give back: every call returns its connection."""

    def release_idle(self) -> None:
        """Nothing is kept."""

    def run(self, op: Op, params: Mapping[str, Any]) -> Outcome:
        try:
            conn = self._engine.connect()
        except exc.DBAPIError as e:
            raise unavailable(e) from e
        with conn:
            return run_on_connection(conn, op, params, self._table)


class AsyncEngineRunner:
    """The asyncio twin of :class:`EngineRunner`."""

    def __init__(self, engine: AsyncEngine, table: str) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._table = table

    async def close(self) -> None:
        """Nothing to give back: every call returns its connection."""

    async def release_idle(self) -> None:
        """Nothing is kept."""

    async def run(self, op: Op, params: Mapping[str, Any]) -> Outcome:
        conn = self._engine.connect()
        try:
            await conn.start()
        except exc.DBAPIError as e:
            raise unavailable(e) from e
        try:
            return await run_on_async_connection(conn, op, params, self._table)
        finally:
            await conn.close()


def run_on_connection(conn: Connection, op: Op, params: Mapping[str, Any], table: str) -> Outcome:
    """Run inside the caller's Connection (and its transaction, if one is open)."""
    try:
        return outcome_of(conn.execute(op.statement, params), op.returns_rows)
    except exc.DBAPIError as e:
        _reraise(e, table)


async def run_on_async_connection(
    conn: AsyncConnection, op: Op, params: Mapping[str, Any], table: str
) -> Outcome:
    try:
        return outcome_of(await conn.execute(op.statement, params), op.returns_rows)
    except exc.DBAPIError as e:
        _reraise(e, table)


def _reraise(error: exc.DBAPIError, table: str) -> NoReturn:
    translated = translate(error, table)
    if translated is error:
        raise error
    raise translated from error
