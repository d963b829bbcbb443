"""What a failed statement means, and whether to run it again: one policy for every runner.

A driver error is sorted into a :class:`Fault`; :func:`judge` then either
allows one more attempt on a fresh connection or returns the exception the
store raises. A statement is repeated only when it is known not to have run
(the server said so before running it, or no connection could be had), or
when its operation is marked repeatable in :mod:`statements` (reads, upserts,
writes conditional on a token): never when a repeat could change its answer.
"""

from __future__ import annotations

import re
from enum import Enum

from sqlalchemy.engine import URL

from .config import shown_url
from .errors import (
    CredentialsRejectedError,
    DatabaseNotFoundError,
    OutcomeUnknownError,
    PoolExhaustedError,
    StatementTimeoutError,
    StoreUnavailableError,
    TableMissingError,
    TransactionConflictError,
)

MIGRATE_HINT = "run the migrations (alembic upgrade heads)"

# The server ended the session before it ran anything we sent: shutdown or
# pg_terminate_backend (57P01), still starting up (57P03), idle_session_timeout (57P05).
NOT_RUN_SQLSTATES = frozenset({"57P01", "57P03", "57P05"})
TIMEOUT_SQLSTATES = frozenset({"57014", "55P03"})  # statement/lock timeout, NOWAIT
CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock, serialization failure


class Fault(Enum):
    NOT_RUN = "the connection failed before the statement ran"
    LOST = "the connection broke after the statement was sent"
    TIMEOUT = "the statement timed out"
    CONFLICT = "deadlock or serialization failure"
    MISSING_TABLE = "the table is missing"
    BOUNCER_BUSY = "PgBouncer found no server connection in time"
    OTHER = "the database refused the statement"


def sqlstate_of(error: BaseException) -> str | None:
    """The SQLSTATE of a psycopg, psycopg2 or asyncpg error, wrapped by SQLAlchemy or not."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for attribute in ("sqlstate", "pgcode"):
            code = getattr(current, attribute, None)
            if isinstance(code, str) and code:
                return code
        current = getattr(current, "orig", None) or current.__cause__
    return None


def classify(error: BaseException, disconnected: bool) -> Fault:
    """Sort ``error``; ``disconnected``: the driver or dialect says the connection is gone."""
    code = sqlstate_of(error)
    if code in NOT_RUN_SQLSTATES:
        return Fault.NOT_RUN
    if "query_wait_timeout" in str(error):  # the query waited in PgBouncer, never reached a server
        return Fault.BOUNCER_BUSY
    if disconnected:
        return Fault.LOST
    if code == "42P01" or "no such table" in str(getattr(error, "orig", error)):
        return Fault.MISSING_TABLE
    if code in TIMEOUT_SQLSTATES or "database is locked" in str(error):  # SQLite's busy timeout
        return Fault.TIMEOUT
    if code in CONFLICT_SQLSTATES:
        return Fault.CONFLICT
    return Fault.OTHER


def missing_table_message(table: str) -> str:
    return (
        f"the table {table} does not exist: {MIGRATE_HINT} "
        "or create the store with create_table=True"
    )


def _reason(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    return " ".join(str(orig).split()) or type(orig).__name__


# What the drivers say when the server turns a connection away, in the server's
# English messages (lc_messages=C): connection failures carry no SQLSTATE in
# psycopg, so the text is all there is. Anything else is plain "unreachable".
_REJECTED_CREDENTIALS = (
    "password authentication failed",
    "no password supplied",
    "authentication failed for user",
)
_ROLE_MISSING = re.compile(r'role "[^"]*" does not exist')
_DATABASE_MISSING = re.compile(r'database "[^"]*" does not exist')
_SQLITE_CANNOT_OPEN = "unable to open database file"


def unreachable(error: BaseException, url: URL | None = None) -> StoreUnavailableError:
    """No connection could be had: nothing was sent. Typed by cause where the driver says."""
    reason = _reason(error)
    where = f" ({shown_url(url)})" if url is not None else ""
    if any(text in reason for text in _REJECTED_CREDENTIALS) or _ROLE_MISSING.search(reason):
        return CredentialsRejectedError(f"the database refused the credentials{where}: {reason}")
    if _DATABASE_MISSING.search(reason):
        return DatabaseNotFoundError(f"no such database{where}: {reason}")
    if _SQLITE_CANNOT_OPEN in reason:
        return DatabaseNotFoundError(
            f"the SQLite database{where} cannot be opened or created (is its folder there, "
            f"and writable?): {reason}"
        )
    return StoreUnavailableError(f"the database could not be reached{where}: {reason}")


def judge(
    op_name: str,
    repeatable: bool,
    fault: Fault,
    error: BaseException,
    table: str,
    *,
    may_repeat: bool,
) -> BaseException | None:
    """None: run the statement once more on a fresh connection. Else: what to raise.

    ``may_repeat`` is False on the last attempt, and in a caller's transaction
    (whose fate is the caller's to decide, not ours).
    """
    if fault is Fault.MISSING_TABLE:
        return TableMissingError(missing_table_message(table))
    if fault is Fault.BOUNCER_BUSY:
        return PoolExhaustedError(
            f"{op_name}: PgBouncer had no server connection free within its query_wait_timeout, "
            f"so nothing ran (raise its pool size, or hold connections for less time): "
            f"{_reason(error)}"
        )
    if fault is Fault.TIMEOUT:
        return StatementTimeoutError(
            f"{op_name}: the database cancelled the statement, nothing was written: "
            f"{_reason(error)}"
        )
    if fault is Fault.CONFLICT:
        if may_repeat:
            return None  # our own statement, rolled back whole: a repeat runs it once
        return TransactionConflictError(
            f"{op_name}: the transaction was rolled back ({_reason(error)}); run it again"
        )
    if fault is Fault.NOT_RUN or (fault is Fault.LOST and repeatable):
        if may_repeat:
            return None
        return StoreUnavailableError(
            f"{op_name}: the connection to the database failed: {_reason(error)}"
        )
    if fault is Fault.LOST:
        return OutcomeUnknownError(
            f"{op_name}: the connection broke after the statement was sent, so it may or "
            f"may not have taken effect; read the state back before acting on it: "
            f"{_reason(error)}"
        )
    return error
