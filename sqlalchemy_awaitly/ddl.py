"""Creating the table race-free, and finding out what an existing table looks like."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from sqlalchemy import Table, exc, func, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateIndex, CreateTable

from .errors import TableMissingError
from .faults import missing_table_message, sqlstate_of
from .schema import qualified_name, regclass_text
from .schema_check import verify_schema


@dataclass(frozen=True)
class TableInfo:
    """What the store must know about an existing table before it runs anything."""

    exists: bool
    # True for tables made by the Node.js adapter (timestamp without time zone).
    naive_utc_expiry: bool = False


_POSTGRES_TABLE_INFO = text(
    """SELECT to_regclass(:relation) IS NOT NULL,
              (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
               WHERE a.attrelid = to_regclass(:relation)
                 AND a.attname = 'expires_at' AND NOT a.attisdropped)"""
)


def inspect_table(conn: Connection, table: Table) -> TableInfo:
    if conn.dialect.name == "postgresql":
        exists, expiry_type = conn.execute(
            _POSTGRES_TABLE_INFO, {"relation": regclass_text(table)}
        ).one()
        return TableInfo(
            exists=bool(exists), naive_utc_expiry=expiry_type == "timestamp without time zone"
        )
    return TableInfo(exists=inspect(conn).has_table(table.name, schema=table.schema))


# Another session created the same relation first: its commit was not yet
# visible to our catalog lookups (a duplicate in pg_class or pg_type, DuplicateTable).
_CREATED_MEANWHILE = frozenset({"23505", "42P07", "42710"})


def create_table(conn: Connection, table: Table) -> None:
    """Create the table and its indexes from the model, safely when many processes start.

    ``CREATE ... IF NOT EXISTS`` alone races on PostgreSQL (two sessions can
    both pass the check and one fails on the catalog's unique index), so the
    statements run in one transaction that first takes an advisory lock
    scoped to it. The lock goes with the COMMIT, and PgBouncer in transaction
    pooling keeps a whole transaction on one server connection, so no lock is
    ever left on a connection someone else gets. A session that waited for
    the lock may still look the table up in a catalog cache from before the
    other's commit (an advisory lock does not refresh it) and fail on the
    duplicate: its next transaction sees the table, so it simply tries again.
    SQLite serialises DDL itself.
    """
    if conn.dialect.name != "postgresql":
        with conn.begin():
            _create(conn, table)
        return
    lock_id = zlib.crc32(f"sqlalchemy_awaitly:{qualified_name(table)}".encode())
    for attempt in (1, 2, 3):
        try:
            with conn.begin():
                conn.execute(select(func.pg_advisory_xact_lock(lock_id)))
                _create(conn, table)
            return
        except exc.DBAPIError as e:
            if attempt == 3 or sqlstate_of(e) not in _CREATED_MEANWHILE:
                raise


def _create(conn: Connection, table: Table) -> None:
    conn.execute(CreateTable(table, if_not_exists=True))
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        conn.execute(CreateIndex(index, if_not_exists=True))


def prepare_table(conn: Connection, table: Table, create: bool, verify: bool) -> TableInfo:
    """Make sure the table is there: created if allowed and missing, else checked.

    A table the store may not create belongs to the migrations, so with
    ``verify`` it must match the model exactly; a table the store may create
    is only required to exist (tables made by the Node.js adapter qualify).
    """
    info = inspect_table(conn, table)
    conn.rollback()
    if not info.exists:
        if not create:
            raise TableMissingError(missing_table_message(qualified_name(table)))
        create_table(conn, table)
        info = inspect_table(conn, table)
        conn.rollback()
    elif verify and not create:
        try:
            verify_schema(conn, table)
        finally:
            conn.rollback()
    return info
