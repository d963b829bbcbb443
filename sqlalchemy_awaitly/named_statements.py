"""The store's statements prepared on the server under a name taken from their text.

Without prepared statements PostgreSQL parses and plans every statement
again: a checkpoint's fenced upsert then spends longer being planned than
being written. psycopg's own prepared statements are named per connection
(``_pg3_0``, ``_pg3_1``...), so behind PgBouncer's transaction pooling, where
clients take turns on a few server sessions, one client's ``_pg3_0`` meets
another's. These are named by a hash of their text instead: one name is one
statement, on whichever server session it is found.

Each call is one simple-protocol message, ``EXECUTE name(...)``, with the values
quoted by the driver, psycopg or psycopg2 (a utility statement takes no bound
parameters). A session
that lacks the statement (a new connection, another server session behind
PgBouncer, one reset by ``DISCARD ALL``) answers 26000 having run nothing; it
is then sent again behind a ``DO`` block that prepares it in that session if
it is still missing. One message is one transaction, so PgBouncer keeps both
on one server session, and a ``statement_timeout`` set in front of them covers
the statement alone. A database that will not run the ``DO`` block (no PL/pgSQL
for this role) gets the store's statements unprepared, after one warning.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Generator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import ARRAY

from .faults import sqlstate_of

NOT_PREPARED = "26000"  # invalid_sql_statement_name: EXECUTE of a name this session lacks
# The DO block refused: PL/pgSQL not usable by this role (42501), or not installed (42704).
REFUSED = frozenset({"42501", "42704"})
PREFIX = "awaitly_"
SLOT = "sqlalchemy_awaitly.named"  # in a pooled connection's info: the names it has

log = logging.getLogger("sqlalchemy_awaitly.store")

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")
_OUTER, _INNER = "$awaitly$", "$awaitly_sql$"


@dataclass(frozen=True)
class Named:
    """One statement as a named server-side statement: how to run it, how to make it."""

    name: str
    execute: str  # EXECUTE name(%(a)s, ...), for client-side binding
    prepare: str  # a DO block that prepares it in this session unless it is there
    names: tuple[str, ...]  # every name it runs: several, for :func:`in_one_message`
    statements: int = 1  # in ``execute`` (and DO blocks in ``prepare``); the last is read

    def message(self, timeout: str | None, prepare: bool) -> tuple[str, int]:
        """The text to send, and how many results come before the statement's own."""
        ahead = self.statements - 1
        if timeout is None and not prepare:
            return self.execute, ahead  # nearly every call
        parts = []
        if timeout is not None:
            parts.append(timeout_statement(timeout))
            ahead += 1
        if prepare:
            parts.append(self.prepare)
            ahead += self.statements
        return "; ".join([*parts, self.execute]), ahead


def in_one_message(statements: tuple[Named, ...]) -> Named:
    """Several named statements sent as one message (one transaction), the last one's
    result read: a lease taken and its row read in one round trip."""
    return Named(
        statements[-1].name,
        "; ".join(n.execute for n in statements),
        "; ".join(n.prepare for n in statements),
        tuple(name for n in statements for name in n.names),
        len(statements),
    )


def timeout_statement(timeout: str) -> str:
    """Sets ``statement_timeout`` (milliseconds) for the rest of the message's transaction:
    a message of several statements is one transaction, unless it says otherwise."""
    assert timeout.isdigit(), timeout  # made by the store, never from a caller's text
    return f"SELECT set_config('statement_timeout', '{timeout}', true)"


@lru_cache(maxsize=512)
def named(sql: str) -> Named:
    """``sql`` (psycopg's ``%(name)s`` placeholders) as a statement named by its text."""
    positions: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        param = match.group(1)
        if param is None:
            return "%"
        return f"${positions.setdefault(param, len(positions) + 1)}"

    server_sql = _PLACEHOLDER.sub(number, sql)
    if _OUTER in server_sql or _INNER in server_sql:
        raise ValueError("the statement holds the quoting tags of its DO block")
    name = PREFIX + hashlib.sha256(server_sql.encode()).hexdigest()[:32]
    values = ", ".join(f"%({param})s" for param in positions)
    execute = f"EXECUTE {name}({values})" if positions else f"EXECUTE {name}"
    prepare = (
        f"DO {_OUTER}BEGIN IF NOT EXISTS (SELECT FROM pg_prepared_statements "
        f"WHERE name = '{name}') THEN EXECUTE {_INNER}PREPARE {name} AS {server_sql}{_INNER}; "
        f"END IF; END{_OUTER}"
    )
    # Client-side binding reads placeholders in the whole text: a % of the SQL is doubled.
    return Named(name, execute, prepare.replace("%", "%%"), (name,))


def nameable(compiled: SQLCompiler) -> bool:
    """Whether a statement goes by name: not with an array of values (the batches), whose
    quoted text costs more than the planning it would save."""
    return not any(isinstance(p.type, ARRAY) for p in compiled.binds.values())


def names_in(info: dict[Any, Any], connection: object) -> set[str]:
    """The names this pooled connection has prepared, as far as the store knows."""
    entry = info.get(SLOT)
    if entry is None or entry[0] is not connection:
        entry = info[SLOT] = (connection, set())
    names: set[str] = entry[1]
    return names


Message = tuple[str, int]  # a text to send, and how many results precede the statement's
Sends = Generator[Message, Exception | None, None]


Flow = tuple[Sends | None, Message]  # the flow (None: not started), and what to send next


def first_message(named: Named, have: set[str], timeout: str | None) -> Flow:
    """The first message of :func:`messages`, and the flow its answer goes to.

    Nearly every call's is the bare ``EXECUTE`` of a name the session has; it goes
    without starting the flow (None), which cost an asyncio call about 1.5 us
    (benchmark 3). :func:`after_error` starts it if that message fails.
    """
    if timeout is None and have.issuperset(named.names):
        return None, named.message(None, prepare=False)
    sends = messages(named, have, timeout)
    return sends, next(sends)


def after_error(
    sends: Sends | None, named: Named, have: set[str], timeout: str | None, error: Exception
) -> Flow:
    """The message to send after ``error``, or ``error`` (or :class:`PrepareRefused`)
    raised, as :func:`messages` decides."""
    if sends is None:  # the bare EXECUTE failed: the flow takes over from there
        sends = messages(named, have, timeout, plain_failed=error)
        return sends, next(sends)
    return sends, sends.send(error)


def messages(
    named: Named, have: set[str], timeout: str | None, plain_failed: Exception | None = None
) -> Sends:
    """What to send for one call of ``named``, in turn, on a session that has the names
    ``have`` (updated here): each message is answered with None (it ran) or its error.

    First the plain ``EXECUTE``, if the session has the name; after 26000 (it has not,
    nothing ran) or without the name, the message that prepares it first. Any other
    error is raised again; a refused ``DO`` block raises :class:`PrepareRefused`. One
    flow for the drivers, sync and asyncio, that only do the sending.
    ``plain_failed``: the error of the bare ``EXECUTE`` already sent (:func:`first_message`).
    """
    names = named.names
    error = plain_failed
    if error is None and have.issuperset(names):
        error = yield named.message(timeout, prepare=False)
        if error is None:
            return
    if error is not None:
        if sqlstate_of(error) != NOT_PREPARED:
            raise error
        have.difference_update(names)  # another server session, or DISCARD ALL
    error = yield named.message(timeout, prepare=True)
    if error is not None:
        if sqlstate_of(error) in REFUSED:  # nothing ran: the DO blocks come first
            raise PrepareRefused() from error
        raise error
    have.update(names)


class PrepareRefused(Exception):
    """The database refused the DO block that prepares a statement (see :data:`REFUSED`)."""


def refused(error: PrepareRefused) -> None:
    """Say, once per store, why its statements run unprepared from now on."""
    why = str(error.__cause__ or error).strip().splitlines() or [""]
    log.warning(
        "the database refused to prepare the store's statements (%s); they run "
        "unprepared from now on (prepare_threshold=None skips trying)",
        why[0],
    )
