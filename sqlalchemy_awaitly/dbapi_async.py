"""What the store needs to know of each asyncio driver to run a statement on it directly.

The asyncio twin of :mod:`dbapi`: psycopg 3's ``AsyncConnection``, asyncpg
and aiosqlite, each reached through SQLAlchemy's pool as the driver's own
connection (``driver_connection``). Errors are handed to SQLAlchemy's
adapter of that connection to be translated, so that callers see the same
``DBAPIError`` subclasses, and :mod:`faults` the same SQLSTATEs, as on the
Connection path.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from sqlalchemy.engine import Dialect

from .dbapi import (
    CLIENT,
    CURSOR,
    SET_TIMEOUT,
    TIMER,
    UNCHANGED,
    Outcome,
    Params,
    Psycopg,
    at_result,
    isolation_back,
    isolation_none,
    kept_cursor,
    with_timeout,
)
from .named_statements import Named, PrepareRefused, after_error, first_message, names_in
from .pool_checkout import Held


class AsyncDriver(Protocol):
    """One asyncio driver, as the direct runner uses it."""

    @property
    def error(self) -> type[Exception]:
        """The base class of the errors :meth:`translated` gives."""
        ...

    def in_autocommit(self, conn: Any) -> bool:
        """True if ``conn`` is in autocommit already (the store's own engine): then
        :meth:`enter_autocommit` is not awaited, nor :meth:`leave_autocommit`."""
        ...

    async def enter_autocommit(self, conn: Any) -> object: ...

    async def leave_autocommit(self, conn: Any, before: object) -> None: ...

    def in_transaction(self, conn: Any) -> bool: ...

    def broken(self, conn: Any) -> bool: ...

    @property
    def several(self) -> bool:
        """As ``SyncDriver.several``: psycopg only."""
        ...

    async def send(
        self,
        held: Held,
        sql: str,
        args: Params,
        returns_rows: bool,
        timeout: str | None,
        named: Named | None,
        lead: int = 0,
    ) -> Outcome:
        """Run one statement (after ``set_config`` of ``timeout``, if given, where supported;
        by name where ``named`` is given and the driver can, see :mod:`named_statements`;
        the last of ``lead`` + 1 statements in one message, where :attr:`several`)."""
        ...

    def translated(self, adapted: Any, error: Exception) -> Exception:
        """``error`` as SQLAlchemy's adapter of the connection (``adapted``) would raise it."""
        ...


def _translated_by(adapted: Any, error: Exception) -> Exception:
    try:
        adapted._handle_exception(error)  # always raises: the translated error, or error
    except Exception as translated:
        return translated
    return error


class AsyncPsycopg:
    """psycopg 3's ``AsyncConnection``; errors need no translation."""

    def __init__(self, prepare: bool | None) -> None:
        self.prepare = prepare
        import psycopg  # as in ``Psycopg``: loaded only for a psycopg engine

        self.error: type[Exception] = psycopg.Error
        self._sync = Psycopg(prepare)
        self._client_cursor: Any = psycopg.AsyncClientCursor
        self.several = True

    def in_autocommit(self, conn: Any) -> bool:
        return bool(conn.autocommit)

    async def enter_autocommit(self, conn: Any) -> object:
        await conn.set_autocommit(True)  # awaited only when not in autocommit
        return False

    async def leave_autocommit(self, conn: Any, before: object) -> None:
        if before is not UNCHANGED and not conn.broken:
            await conn.set_autocommit(before)

    def in_transaction(self, conn: Any) -> bool:
        return self._sync.in_transaction(conn)

    def broken(self, conn: Any) -> bool:
        return self._sync.broken(conn)

    async def send(
        self,
        held: Held,
        sql: str,
        args: Params,
        returns_rows: bool,
        timeout: str | None,
        named: Named | None,
        lead: int = 0,
    ) -> Outcome:
        if named is not None and self._sync.by_name(held.connection):
            try:  # as dbapi.send_named (psycopg), awaited
                cur = kept_cursor(held, CLIENT, self._client_cursor)
                have = names_in(held.info, held.connection)
                sends, (text, before) = first_message(named, have, timeout)
                while True:
                    try:
                        await cur.execute(text, args, prepare=False)
                    except self.error as e:
                        sends, (text, before) = after_error(sends, named, have, timeout, e)
                        continue
                    if sends is not None:
                        next(sends, None)  # it ran: the session has the name
                    cur = at_result(cur, before)
                    return Outcome(await cur.fetchall() if returns_rows else [], cur.rowcount)
            except PrepareRefused as e:
                self._sync.give_up_names(e)
        if lead:  # as Psycopg.send
            cur = kept_cursor(held, CLIENT, self._client_cursor)
            await cur.execute(with_timeout(sql, timeout), args, prepare=False)
            cur = at_result(cur, lead + (timeout is not None))
            return Outcome(await cur.fetchall() if returns_rows else [], cur.rowcount)
        cur = kept_cursor(held, CURSOR)
        prepare = self.prepare
        if timeout is None:
            await cur.execute(sql, args, prepare=prepare)
        else:  # one pipeline: one round trip, the bound for this transaction only
            async with held.connection.pipeline():
                timer = kept_cursor(held, TIMER)
                await timer.execute(SET_TIMEOUT, (timeout,), prepare=prepare)
                await cur.execute(sql, args, prepare=prepare)
        return Outcome(await cur.fetchall() if returns_rows else [], cur.rowcount)

    def translated(self, adapted: Any, error: Exception) -> Exception:
        return error


_COUNT = re.compile(r"(\d+)$")


class Asyncpg:
    """asyncpg: outside a transaction every statement commits on its own."""

    def __init__(self, dbapi: Any) -> None:
        self.error: type[Exception] = dbapi.Error
        self.several = False  # a statement with arguments is one message of its own

    def in_autocommit(self, conn: Any) -> bool:
        return True  # asyncpg has no mode: no transaction open is autocommit

    async def enter_autocommit(self, conn: Any) -> object:
        return UNCHANGED

    async def leave_autocommit(self, conn: Any, before: object) -> None:
        return None

    def in_transaction(self, conn: Any) -> bool:
        return bool(conn.is_in_transaction())

    def broken(self, conn: Any) -> bool:
        return bool(conn.is_closed())

    async def send(
        self,
        held: Held,
        sql: str,
        args: Params,
        returns_rows: bool,
        timeout: str | None,
        named: Named | None,
        lead: int = 0,
    ) -> Outcome:
        assert not lead
        conn = held.connection
        if returns_rows:
            rows = await conn.fetch(sql, *args)
            return Outcome(rows, len(rows))
        status = await conn.execute(sql, *args)  # such as "UPDATE 3"
        count = _COUNT.search(status or "")
        return Outcome([], int(count.group(1)) if count else -1)

    def translated(self, adapted: Any, error: Exception) -> Exception:
        return _translated_by(adapted, error)


class Aiosqlite:
    """aiosqlite: one trip to its thread per statement (``execute_fetchall``).

    The row count comes from ``total_changes``: the connection is this call's
    alone while it is checked out, so the difference is this statement's.
    """

    def __init__(self, dbapi: Any) -> None:
        self.error: type[Exception] = dbapi.Error
        self.several = False

    def in_autocommit(self, conn: Any) -> bool:
        return conn.isolation_level is None

    async def enter_autocommit(self, conn: Any) -> object:
        return isolation_none(conn)

    async def leave_autocommit(self, conn: Any, before: object) -> None:
        isolation_back(conn, before)

    def in_transaction(self, conn: Any) -> bool:
        return bool(conn.in_transaction)

    def broken(self, conn: Any) -> bool:
        return False

    async def send(
        self,
        held: Held,
        sql: str,
        args: Params,
        returns_rows: bool,
        timeout: str | None,
        named: Named | None,
        lead: int = 0,
    ) -> Outcome:
        assert not lead
        conn = held.connection
        changes = conn.total_changes
        rows = await conn.execute_fetchall(sql, args)
        return Outcome(list(rows), len(rows) if returns_rows else conn.total_changes - changes)

    def translated(self, adapted: Any, error: Exception) -> Exception:
        return _translated_by(adapted, error)


def async_driver(dialect: Dialect, prepare: bool | None) -> AsyncDriver | None:
    """The driver of ``dialect`` if the direct runner knows it, else None (use a Connection)."""
    if dialect.name == "postgresql" and dialect.driver == "psycopg":  # its async dialect
        return AsyncPsycopg(prepare)
    if dialect.name == "postgresql" and dialect.driver == "asyncpg":
        return Asyncpg(dialect.loaded_dbapi)
    if dialect.name == "sqlite" and dialect.driver == "aiosqlite":
        return Aiosqlite(dialect.loaded_dbapi)
    return None
