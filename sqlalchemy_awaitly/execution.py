"""Running the store's statements: on a pooled driver connection, or on a Connection.

Most of the cost of a key/value call through SQLAlchemy is not SQL: it is the
transaction SQLAlchemy opens around every ``Connection.execute`` (BEGIN and
ROLLBACK round trips) and the per-call statement handling. For the drivers
:mod:`dbapi` and :mod:`dbapi_async` know (psycopg, psycopg2, sqlite3; psycopg,
asyncpg, aiosqlite) the store compiles each
statement once and runs it in autocommit mode on a connection checked out of
the engine's own pool for that one call, leaving the connection exactly as it
found it. Other drivers go through an ``AUTOCOMMIT`` Connection. Inside a
caller's transaction, statements run on the caller's Connection.

Every connection comes from SQLAlchemy's pool and goes back to it after the
call, so the pool's own behaviour holds: fair waiting and one
``pool_timeout``, ``pool_pre_ping`` and ``pool_recycle``, ``dispose()``, and
after a disconnect the invalidation of every connection older than it.
When a statement fails, :func:`faults.judge` decides whether it may run once
more; sync and async runners only do the I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import exc, text
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import Pool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.util import greenlet_spawn

from .dbapi import UNCHANGED, Outcome, Params, Psycopg, Psycopg2, Rows, SyncDriver
from .dbapi_async import AsyncDriver
from .errors import AwaitlyStoreError, PoolExhaustedError
from .faults import Fault, classify, judge, unreachable
from .named_statements import Named, in_one_message, nameable, named
from .pool_checkout import Checkouts, Held
from .pool_guards import guard_pool
from .statements import Op, Statements


@dataclass(frozen=True)
class CompiledOp:
    """A statement as the driver takes it; ``positions`` orders a positional paramstyle's."""

    op: Op
    sql: str
    fixed_params: Mapping[str, Any]
    positions: tuple[str, ...] | None = None
    named: Named | None = None  # psycopg: the statement by name (``named_statements``)
    lead: int = 0  # statements in ``sql`` ahead of the op's own (``Op.before``, in one message)

    def args(self, params: Mapping[str, Any]) -> Params:
        merged = {**self.fixed_params, **params} if self.fixed_params else params
        if self.positions is None:
            return merged
        return tuple([merged.get(name) for name in self.positions])


BY_NAME_DRIVERS = ("psycopg", "psycopg_async", "psycopg2")  # see ``named_statements``


def direct_timeout(dialect: Dialect, psycopg: bool, statement_timeout: float | None) -> bool:
    """Whether the asyncio direct runner can keep ``statement_timeout``: on PostgreSQL it
    is sent in one pipeline with the statement, which psycopg offers and asyncpg does not
    (SQLite's is the busy timeout of the engine). Every sync driver the store knows can."""
    return statement_timeout is None or dialect.name != "postgresql" or psycopg


def compile_ops(
    statements: Statements, dialect: Dialect, several: bool = False
) -> dict[Op, CompiledOp]:
    """Compile every statement once; keep any parameters SQLAlchemy fixed itself.

    ``several``: the driver takes several statements in one message (client-side
    binding), so an op with ``before`` is compiled as all of them together; else
    each is compiled alone, to be run in turn.
    """
    compiled: dict[Op, CompiledOp] = {}
    for op in statements.all_ops():
        for one in (*op.before, op):
            compiled[one] = _compiled(one, dialect)
        if op.before and several:
            parts = [compiled[one] for one in (*op.before, op)]
            assert all(part.positions is None for part in parts)  # client-side binding
            names = tuple(part.named for part in parts if part.named is not None)
            compiled[op] = CompiledOp(
                op,
                "; ".join(part.sql for part in parts),
                {k: v for part in parts for k, v in part.fixed_params.items()},
                None,
                in_one_message(names) if len(names) == len(parts) else None,
                lead=len(op.before),
            )
    return compiled


def _compiled(op: Op, dialect: Dialect) -> CompiledOp:
    c = cast(SQLCompiler, cast(ClauseElement, op.statement).compile(dialect=dialect))
    fixed = {k: v for k, v in c.params.items() if v is not None}
    positions = tuple(c.positiontup) if c.positional and c.positiontup else None
    by_name = None
    if dialect.name == "postgresql" and dialect.driver in BY_NAME_DRIVERS:
        by_name = named(c.string) if nameable(c) else None
    return CompiledOp(op, c.string, fixed, positions, by_name)


def outcome_of(result: Any, returns_rows: bool) -> Outcome:
    rows: Rows = list(result.all()) if returns_rows else []
    return Outcome(rows, result.rowcount)


def no_connection(engine: Engine, error: Exception) -> AwaitlyStoreError:
    """What to raise when ``engine`` gave no connection: the pool stayed full, or the
    database could not be reached (typed by cause where the driver says)."""
    if isinstance(error, exc.TimeoutError):
        return pool_exhausted(engine.pool, error)
    return unreachable(error, engine.url)


def connect(engine: Engine) -> Connection:
    """A Connection of ``engine``; failing to get one raises the store's error for why."""
    try:
        return engine.connect()
    except (exc.TimeoutError, exc.DBAPIError) as e:
        raise no_connection(engine, e) from e


async def connect_async(engine: AsyncEngine) -> AsyncConnection:
    """The asyncio twin of :func:`connect`."""
    conn = engine.connect()
    try:
        await conn.start()
    except (exc.TimeoutError, exc.DBAPIError) as e:
        raise no_connection(engine.sync_engine, e) from e
    return conn


def pool_exhausted(pool: Pool, error: BaseException) -> PoolExhaustedError:
    return PoolExhaustedError(
        f"no pooled connection came free in time ({pool.status()}): the pool is too "
        "small for this load, or connections are held elsewhere (raise pool_size / "
        f"max_overflow, or pool_timeout): {error}"
    )


class _DriverFailures:
    """What the direct runners (sync and asyncio) do when a driver's statement fails."""

    def __init__(self, dialect: Dialect, table: str, error_class: type[Exception]) -> None:
        self.dialect = dialect
        self.table = table
        self.error_class = error_class

    def fault(self, error: Exception, broken: bool, conn: Any, cur: Any) -> Fault:
        gone = broken or self.dialect.is_disconnect(error, conn, cur)  # type: ignore[arg-type]
        return classify(error, gone)

    def verdict(
        self, compiled: CompiledOp, fault: Fault, error: Exception, attempt: int
    ) -> BaseException | None:
        op = compiled.op
        verdict = judge(op.name, op.repeatable, fault, error, self.table, may_repeat=attempt == 1)
        if verdict is error:  # the database refused it: as SQLAlchemy would raise it
            return exc.DBAPIError.instance(
                compiled.sql, None, error, self.error_class, dialect=self.dialect, ismulti=False
            )
        return verdict


def _invalidates_pool(fault: Fault) -> bool:
    """The server or the network dropped this session: older ones are likely gone too."""
    return fault in (Fault.LOST, Fault.NOT_RUN)


def timeout_ms(seconds: float | None) -> str | None:
    return None if seconds is None else str(max(1, round(seconds * 1000)))


class DirectRunner:
    """Runs compiled statements on the pool's driver connections, in autocommit.

    A ``statement_timeout`` is sent in one pipeline with the statement, which
    only psycopg offers: the store picks this runner for other drivers only
    without one.
    """

    def __init__(
        self,
        engine: Engine,
        statements: Statements,
        table: str,
        driver: SyncDriver,
        statement_timeout: float | None = None,
    ) -> None:
        self._engine = engine
        self._driver = driver
        self._checkouts = Checkouts(engine, guard_pool(engine), driver.in_transaction)
        self._compiled = compile_ops(statements, engine.dialect, driver.several)
        self._failures = _DriverFailures(engine.dialect, table, driver.error)
        self._timeout = _server_timeout(engine.dialect, statement_timeout)
        assert self._timeout is None or isinstance(driver, (Psycopg, Psycopg2))

    def _checkout(self) -> Held:
        try:
            return self._checkouts.take()
        except Exception as e:  # psycopg's own errors too: the pool does not wrap them
            raise no_connection(self._engine, e) from e

    def run(self, op: Op, params: Mapping[str, Any]) -> Outcome:
        compiled = self._compiled[op]
        if op.before and not compiled.lead:  # a driver that takes one statement a message
            for first in op.before:
                self.run(first, params)
        args = compiled.args(params)
        rows = op.returns_rows
        driver = self._driver
        for attempt in (1, 2):
            held = self._checkout()
            try:
                conn = held.connection
                cur = None
                try:
                    before = driver.enter_autocommit(conn)  # a caller's engine: for this call
                    try:
                        cur = driver.send(
                            held, compiled.sql, args, self._timeout, compiled.named, compiled.lead
                        )
                        return Outcome(cur.fetchall() if rows else [], cur.rowcount)
                    finally:
                        driver.leave_autocommit(conn, before)
                except driver.error as e:
                    fault = self._failures.fault(e, driver.broken(conn), conn, cur)
                    if _invalidates_pool(fault):
                        held.invalidate(e)
                    verdict = self._failures.verdict(compiled, fault, e, attempt)
                    if verdict is not None:
                        raise verdict from e
            finally:
                held.release()
        raise AssertionError("unreachable: the second attempt returns or raises")


class AsyncDirectRunner:
    """The asyncio twin of :class:`DirectRunner`.

    A checkout that may wait for a connection, or make one, runs in a greenlet
    as SQLAlchemy's own asyncio checkout does; the common cases, a free
    connection usable as it is and handing it back, need none
    (:meth:`Checkouts.take_without_io`, :meth:`Held.release_without_io`).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        statements: Statements,
        table: str,
        driver: AsyncDriver,
        statement_timeout: float | None = None,
    ) -> None:
        sync_engine = engine.sync_engine
        self._engine = engine
        self._driver = driver
        self._checkouts = Checkouts(sync_engine, guard_pool(sync_engine), driver.in_transaction)
        self._compiled = compile_ops(statements, engine.dialect, driver.several)
        self._failures = _DriverFailures(engine.dialect, table, driver.error)
        self._timeout = _server_timeout(engine.dialect, statement_timeout)

    async def _checkout(self) -> Held:
        """A connection when none is free as it is (``take_without_io`` first)."""
        try:
            return await greenlet_spawn(self._checkouts.take)
        except Exception as e:  # the drivers' own errors too: the pool does not wrap them
            raise no_connection(self._engine.sync_engine, e) from e

    async def run(self, op: Op, params: Mapping[str, Any]) -> Outcome:
        # Each coroutine awaited costs a call about 1 us between two round trips: the
        # common path (a free connection, in autocommit already) awaits only the driver.
        compiled = self._compiled[op]
        if op.before and not compiled.lead:  # as DirectRunner.run
            for first in op.before:
                await self.run(first, params)
        args = compiled.args(params)
        driver = self._driver
        for attempt in (1, 2):
            held = self._checkouts.take_without_io() or await self._checkout()
            try:
                conn = held.connection
                try:
                    before = UNCHANGED
                    if not driver.in_autocommit(conn):
                        before = await driver.enter_autocommit(conn)
                    try:
                        return await driver.send(
                            held,
                            compiled.sql,
                            args,
                            op.returns_rows,
                            self._timeout,
                            compiled.named,
                            compiled.lead,
                        )
                    finally:
                        if before is not UNCHANGED:
                            await driver.leave_autocommit(conn, before)
                except Exception as e:
                    adapted = held.dbapi_connection
                    error = driver.translated(adapted, e)
                    broken = driver.broken(conn)
                    if not (broken or isinstance(error, driver.error)):
                        raise  # not the database's answer: a bug to see as it is
                    fault = self._failures.fault(error, broken, adapted, None)
                    if _invalidates_pool(fault):
                        await greenlet_spawn(held.invalidate, error)
                    verdict = self._failures.verdict(compiled, fault, error, attempt)
                    if verdict is not None:
                        raise verdict from e
            finally:
                if not held.release_without_io():
                    await greenlet_spawn(held.release)
        raise AssertionError("unreachable: the second attempt returns or raises")


def _settle(op: Op, error: exc.DBAPIError, table: str, may_repeat: bool) -> None:
    """Return to run ``op`` once more; otherwise raise what the policy says for ``error``."""
    fault = classify(error, bool(error.connection_invalidated))
    verdict = judge(op.name, op.repeatable, fault, error, table, may_repeat=may_repeat)
    if verdict is error:
        raise error
    if verdict is not None:
        raise verdict from error


_SET_TIMEOUT_PARAM = text("SELECT set_config('statement_timeout', :ms, true)")
AnyEngine = TypeVar("AnyEngine", Engine, AsyncEngine)


def _server_timeout(dialect: Dialect, seconds: float | None) -> str | None:
    """The bound to set per statement; SQLite's busy timeout is the engine's own."""
    return timeout_ms(seconds) if dialect.name == "postgresql" else None


def _statement_engine(engine: AnyEngine, timeout: str | None) -> AnyEngine:
    """AUTOCOMMIT, unless each statement needs a transaction of its own for its timeout:
    then READ COMMITTED, whatever the engine's own level (an engine the store builds is
    AUTOCOMMIT, where ``begin()`` opens no transaction and ``set_config(..., true)``
    would bound only itself)."""
    level = "AUTOCOMMIT" if timeout is None else "READ COMMITTED"
    return engine.execution_options(isolation_level=level)


class EngineRunner:
    """Runs statements on an ``AUTOCOMMIT`` Connection of the engine (non-psycopg drivers).

    With a ``statement_timeout`` on PostgreSQL, each statement runs in a
    transaction of its own that sets the bound with ``SET LOCAL`` semantics
    (two more round trips); on SQLite the bound is the busy timeout, set
    when the store builds the engine.
    """

    def __init__(self, engine: Engine, table: str, statement_timeout: float | None = None) -> None:
        guard_pool(engine)
        self._timeout = _server_timeout(engine.dialect, statement_timeout)
        self._engine = _statement_engine(engine, self._timeout)
        self._table = table

    def run(self, op: Op, params: Mapping[str, Any]) -> Outcome:
        for attempt in (1, 2):
            with connect(self._engine) as conn:
                try:
                    if self._timeout is None:
                        return _executed(conn, op, params)
                    with conn.begin():
                        conn.execute(_SET_TIMEOUT_PARAM, {"ms": self._timeout})
                        return _executed(conn, op, params)
                except exc.DBAPIError as e:
                    _settle(op, e, self._table, may_repeat=attempt == 1)
        raise AssertionError("unreachable: the second attempt returns or raises")


def _executed(conn: Connection, op: Op, params: Mapping[str, Any]) -> Outcome:
    """``op``'s outcome on ``conn``, the statements it has ``before`` run first."""
    for first in op.before:
        conn.execute(first.statement, params)
    return outcome_of(conn.execute(op.statement, params), op.returns_rows)


async def _executed_async(conn: AsyncConnection, op: Op, params: Mapping[str, Any]) -> Outcome:
    for first in op.before:
        await conn.execute(first.statement, params)
    return outcome_of(await conn.execute(op.statement, params), op.returns_rows)


class AsyncEngineRunner:
    """The asyncio twin of :class:`EngineRunner`."""

    def __init__(
        self, engine: AsyncEngine, table: str, statement_timeout: float | None = None
    ) -> None:
        guard_pool(engine.sync_engine)
        self._timeout = _server_timeout(engine.dialect, statement_timeout)
        self._engine = _statement_engine(engine, self._timeout)
        self._table = table

    async def run(self, op: Op, params: Mapping[str, Any]) -> Outcome:
        for attempt in (1, 2):
            conn = await connect_async(self._engine)
            try:
                if self._timeout is None:
                    return await _executed_async(conn, op, params)
                async with conn.begin():
                    await conn.execute(_SET_TIMEOUT_PARAM, {"ms": self._timeout})
                    return await _executed_async(conn, op, params)
            except exc.DBAPIError as e:
                _settle(op, e, self._table, may_repeat=attempt == 1)
            finally:
                await conn.close()
        raise AssertionError("unreachable: the second attempt returns or raises")


def run_on_connection(conn: Connection, op: Op, params: Mapping[str, Any], table: str) -> Outcome:
    """Run inside the caller's Connection (and its transaction, if one is open): no repeat."""
    try:
        return _executed(conn, op, params)
    except exc.DBAPIError as e:
        _settle(op, e, table, may_repeat=False)
        raise  # a caller's transaction is never repeated: _settle always raises


async def run_on_async_connection(
    conn: AsyncConnection, op: Op, params: Mapping[str, Any], table: str
) -> Outcome:
    try:
        return await _executed_async(conn, op, params)
    except exc.DBAPIError as e:
        _settle(op, e, table, may_repeat=False)
        raise  # a caller's transaction is never repeated: _settle always raises
