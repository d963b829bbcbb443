"""What the store needs to know of each sync driver to run a statement on it directly.

The direct runner (``execution.DirectRunner``) sends its compiled SQL on the
pooled driver connection itself, in autocommit, instead of through a
SQLAlchemy ``Connection``: that per-call transaction and statement handling
cost more than the SQL on every driver (about 10x on SQLite). Each driver
says here how to switch autocommit on for one call and back, whether a
transaction is open, whether the connection is broken, and how to send a
statement. Anything else about a failure is decided in :mod:`faults`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from sqlalchemy.engine import Dialect

from .named_statements import (
    Named,
    PrepareRefused,
    after_error,
    first_message,
    names_in,
    refused,
    timeout_statement,
)
from .pool_checkout import Held

Params = Mapping[str, Any] | Sequence[Any]
Rows = list[Sequence[Any]]


class Outcome(NamedTuple):
    """What a statement gave back: its rows (if it returns any) and its row count."""

    rows: Rows
    rowcount: int


# The bound on one statement of the store's, set for its own transaction only.
# psycopg sends it in one pipeline with the statement, before the Sync that ends
# that implicit transaction: one round trip, nothing left on the session for
# PgBouncer's transaction pooling to hand on (a session SET would be), no
# startup parameter for PgBouncer to refuse.
SET_TIMEOUT = "SELECT set_config('statement_timeout', %s, true)"

# Cursors kept with each pooled (sync or async) connection, under these keys
# of its ``info``: a new one per call costs about 10 us.
CURSOR = "sqlalchemy_awaitly.cursor"
TIMER = "sqlalchemy_awaitly.timer"  # the statement timeout's, in the same pipeline
CLIENT = "sqlalchemy_awaitly.client_cursor"  # psycopg's, binding values client-side


def kept_cursor(held: Held, slot: str = CURSOR, factory: Any = None) -> Any:
    """The cursor kept with ``held``'s pooled connection (a new one if it has none);
    ``factory``: a cursor class to make it with, else the connection's own."""
    conn = held.connection
    cur = held.info.get(slot)
    if cur is None or cur.connection is not conn or getattr(cur, "closed", False):
        # AsyncConnection.cursor() is sync too.
        cur = held.info[slot] = conn.cursor() if factory is None else factory(conn)
    return cur


class SyncDriver(Protocol):
    """One DBAPI driver, as the direct runner uses it."""

    @property
    def error(self) -> type[Exception]:
        """The driver's base error class."""
        ...

    def enter_autocommit(self, conn: Any) -> object:
        """Switch ``conn`` to autocommit; return what :meth:`leave_autocommit` restores."""
        ...

    def leave_autocommit(self, conn: Any, before: object) -> None: ...

    def in_transaction(self, conn: Any) -> bool: ...

    def broken(self, conn: Any) -> bool: ...

    @property
    def several(self) -> bool:
        """Whether one message may hold several statements (``Op.before``): the drivers
        that bind values client-side."""
        ...

    def send(
        self,
        held: Held,
        sql: str,
        args: Params,
        timeout: str | None,
        named: Named | None,
        lead: int = 0,
    ) -> Any:
        """Run one statement on ``held``; return the cursor holding its result.

        ``timeout``: a ``statement_timeout`` for it alone (psycopg only: the store
        picks another runner otherwise); ``named``: the statement by name, for a
        driver that can run it so (:mod:`named_statements`); ``lead``: statements
        in ``sql`` ahead of the one whose result is read (only if :attr:`several`)."""
        ...


UNCHANGED = object()  # the connection was in autocommit already: nothing to restore


def autocommit_on(conn: Any) -> object:
    """For drivers with an ``autocommit`` attribute (psycopg, psycopg2)."""
    if conn.autocommit:
        return UNCHANGED
    conn.autocommit = True
    return False


def autocommit_back(conn: Any, before: object, broken: bool) -> None:
    if before is not UNCHANGED and not broken:
        conn.autocommit = before


def isolation_none(conn: Any) -> object:
    """For sqlite3 and aiosqlite, where autocommit is ``isolation_level = None``."""
    before = conn.isolation_level
    if before is None:
        return UNCHANGED
    conn.isolation_level = None  # aiosqlite sets it without a trip to its thread
    return before


def isolation_back(conn: Any, before: object) -> None:
    if before is not UNCHANGED:
        conn.isolation_level = before


class Psycopg:
    """psycopg 3. ``prepare`` is the store's setting: False never prepares; None
    lets a connection with a ``prepare_threshold`` prepare as psycopg does, and runs
    statements by name (:mod:`named_statements`) on one without (safe behind PgBouncer).
    """

    def __init__(self, prepare: bool | None) -> None:
        # Imported here: an app on psycopg2, asyncpg or SQLite never loads psycopg
        # (a fifth of the package's import time); a psycopg engine has loaded it.
        import psycopg

        self.prepare = prepare
        self.error: type[Exception] = psycopg.Error
        self.client_cursor: Any = psycopg.ClientCursor
        self.refused = False  # the database would not prepare: statements run unprepared
        self.several = True  # through a ClientCursor
        self._idle = psycopg.pq.TransactionStatus.IDLE

    def by_name(self, conn: Any) -> bool:
        """Whether to run a statement that has a name by it on ``conn`` (sync or asyncio)."""
        return self.prepare is None and conn.prepare_threshold is None and not self.refused

    def give_up_names(self, error: PrepareRefused) -> None:
        self.refused = True
        refused(error)

    def send(
        self,
        held: Held,
        sql: str,
        args: Params,
        timeout: str | None,
        named: Named | None,
        lead: int = 0,
    ) -> Any:
        conn = held.connection
        if named is not None and self.by_name(conn):
            try:
                return self._send_named(held, named, args, timeout)
            except PrepareRefused as e:
                self.give_up_names(e)
        if lead:  # several statements: one message, as only client-side binding sends it
            cur = kept_cursor(held, CLIENT, self.client_cursor)
            cur.execute(with_timeout(sql, timeout), args, prepare=False)
            return at_result(cur, lead + (timeout is not None))
        cur = kept_cursor(held)
        if timeout is None:
            cur.execute(sql, args, prepare=self.prepare)
        else:
            with conn.pipeline():
                timer = kept_cursor(held, TIMER)
                timer.execute(SET_TIMEOUT, (timeout,), prepare=self.prepare)
                cur.execute(sql, args, prepare=self.prepare)
        return cur

    def _send_named(self, held: Held, named: Named, args: Params, timeout: str | None) -> Any:
        cur = kept_cursor(held, CLIENT, self.client_cursor)
        return send_named(cur, held, named, args, timeout, self.error, psycopg=True)

    def enter_autocommit(self, conn: Any) -> object:
        return autocommit_on(conn)

    def leave_autocommit(self, conn: Any, before: object) -> None:
        autocommit_back(conn, before, conn.broken)

    def in_transaction(self, conn: Any) -> bool:
        return bool(conn.pgconn.transaction_status != self._idle)

    def broken(self, conn: Any) -> bool:
        return bool(conn.broken or conn.closed)


def send_named(
    cur: Any,
    held: Held,
    named: Named,
    args: Params,
    timeout: str | None,
    error: type[Exception],
    psycopg: bool,
) -> Any:
    """Run ``named`` by name on ``cur`` (binding values client-side), as
    :func:`named_statements.messages` says. A psycopg cursor keeps every result of a
    message (and is told not to prepare the message itself); a psycopg2 one only the
    last, the statement's."""
    extra = {"prepare": False} if psycopg else {}
    have = names_in(held.info, held.connection)
    sends, (text, before) = first_message(named, have, timeout)
    while True:
        try:
            cur.execute(text, args, **extra)
        except error as e:
            sends, (text, before) = after_error(sends, named, have, timeout, e)  # or raises
            continue
        if sends is not None:
            next(sends, None)  # it ran: the session has the name
        return at_result(cur, before if psycopg else 0)


def with_timeout(sql: str, timeout: str | None) -> str:
    """``sql`` behind the ``statement_timeout`` for its message's transaction, if any."""
    return sql if timeout is None else f"{timeout_statement(timeout)}; {sql}"


def send_plain(held: Held, sql: str, args: Params, timeout: str | None) -> Any:
    """For a driver with no statement timeout of its own nor names (sqlite3)."""
    assert timeout is None  # the store picks the direct runner for them only without one
    cur = kept_cursor(held)
    cur.execute(sql, args)
    return cur


def at_result(cur: Any, before: int) -> Any:
    """``cur`` (psycopg's, which keeps each result of a message) moved past the
    ``before`` results ahead of its statement's."""
    for _ in range(before):
        cur.nextset()
    return cur


class Psycopg2:
    """psycopg2, which binds values client-side: the store's statements go by name
    (:mod:`named_statements`) unless ``prepare`` is False (``prepare_threshold=None``),
    and a ``statement_timeout`` goes in the same message as the statement."""

    def __init__(self, dbapi: Any, prepare: bool | None) -> None:
        self.error: type[Exception] = dbapi.Error
        self.prepare = prepare
        self.refused = False  # as Psycopg's
        self.several = True  # it binds client-side; a cursor keeps the last result
        self._idle = dbapi.extensions.TRANSACTION_STATUS_IDLE

    def send(
        self,
        held: Held,
        sql: str,
        args: Params,
        timeout: str | None,
        named: Named | None,
        lead: int = 0,
    ) -> Any:
        cur = kept_cursor(held)
        if named is not None and self.prepare is not False and not self.refused:
            try:
                return send_named(cur, held, named, args, timeout, self.error, psycopg=False)
            except PrepareRefused as e:
                self.refused = True
                refused(e)
        cur.execute(with_timeout(sql, timeout), args)  # one message, one transaction
        return cur

    def enter_autocommit(self, conn: Any) -> object:
        return autocommit_on(conn)

    def leave_autocommit(self, conn: Any, before: object) -> None:
        autocommit_back(conn, before, bool(conn.closed))

    def in_transaction(self, conn: Any) -> bool:
        return bool(conn.get_transaction_status() != self._idle)

    def broken(self, conn: Any) -> bool:
        return bool(conn.closed)


class Sqlite3:
    """The standard library's sqlite3: autocommit is ``isolation_level = None``."""

    def __init__(self, dbapi: Any) -> None:
        self.error: type[Exception] = dbapi.Error
        self.several = False  # sqlite3 runs one statement per execute()

    def enter_autocommit(self, conn: Any) -> object:
        return isolation_none(conn)

    def leave_autocommit(self, conn: Any, before: object) -> None:
        isolation_back(conn, before)

    def in_transaction(self, conn: Any) -> bool:
        return bool(conn.in_transaction)

    def broken(self, conn: Any) -> bool:
        return False

    def send(
        self,
        held: Held,
        sql: str,
        args: Params,
        timeout: str | None,
        named: Named | None,
        lead: int = 0,
    ) -> Any:
        assert not lead
        return send_plain(held, sql, args, timeout)


def sync_driver(dialect: Dialect, prepare: bool | None) -> SyncDriver | None:
    """The driver of ``dialect`` if the direct runner knows it, else None (use a Connection)."""
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        return Psycopg(prepare)
    if dialect.name == "postgresql" and dialect.driver == "psycopg2":
        return Psycopg2(dialect.loaded_dbapi, prepare)
    if dialect.name == "sqlite" and dialect.driver == "pysqlite":
        return Sqlite3(dialect.loaded_dbapi)
    return None
