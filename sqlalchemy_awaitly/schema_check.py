"""Does the table in the database match the model? For apps whose migrations own the schema.

A store created with ``create_table=False`` issues no DDL, so a table that was
migrated wrongly (or not at all) would otherwise show up later as slow scans,
failed writes or a missing-table error mid-workflow. The check compares what
the database catalog reports with :func:`~sqlalchemy_awaitly.workflow_state_table`
and fails closed, listing every difference.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Index, Table, inspect
from sqlalchemy.engine import Connection, Dialect, Inspector
from sqlalchemy.exc import NoSuchTableError
from sqlalchemy.sql.elements import ClauseElement

from .errors import SchemaMismatchError, TableMissingError
from .faults import MIGRATE_HINT, missing_table_message
from .schema import qualified_name

# The Node.js adapter's own CREATE TABLE differs from the model in two ways the
# store handles: expiry as naive UTC timestamps, and a key in the database's
# default collation (correct, but prefix scans may not use the index).
NODE_LAYOUT_TYPES = {"key": "TEXT", "expires_at": "TIMESTAMP WITHOUT TIME ZONE"}


def schema_problems(conn: Connection, table: Table, *, allow_node_layout: bool = True) -> list[str]:
    """Every way the database's table differs from ``table``; empty when they agree.

    Extra indexes are allowed (they cannot break the store); extra columns are
    not, since the store's inserts would not fill them. With
    ``allow_node_layout`` a table created by the Node.js adapter passes.
    """
    inspector = inspect(conn)
    if not inspector.has_table(table.name, schema=table.schema):
        return [f"the table {qualified_name(table)} does not exist"]
    return _differences(inspector, conn.dialect, table, allow_node_layout)


def _differences(
    inspector: Inspector, dialect: Dialect, table: Table, allow_node_layout: bool
) -> list[str]:
    """:func:`schema_problems` of a table that exists."""
    problems: list[str] = []
    found = {c["name"]: c for c in inspector.get_columns(table.name, schema=table.schema)}
    for column in table.columns:
        actual = found.pop(column.name, None)
        if actual is None:
            problems.append(f"column {column.name} is missing")
            continue
        want, got = _type_sql(column.type, dialect), _type_sql(actual["type"], dialect)
        node_type = NODE_LAYOUT_TYPES.get(column.name) if dialect.name == "postgresql" else None
        if want != got and not (allow_node_layout and got == node_type):
            problems.append(f"column {column.name} is {got}, expected {want}")
        if bool(actual["nullable"]) != bool(column.nullable):
            expected = "NULL allowed" if column.nullable else "NOT NULL"
            problems.append(f"column {column.name} should be {expected}")
    problems.extend(f"unexpected column {name}" for name in sorted(found))

    want_pk = [c.name for c in table.primary_key.columns]
    got_pk = list(
        inspector.get_pk_constraint(table.name, schema=table.schema)["constrained_columns"]
    )
    if got_pk != want_pk:
        problems.append(f"primary key is {got_pk or 'missing'}, expected {want_pk}")

    indexes = {i["name"]: i for i in inspector.get_indexes(table.name, schema=table.schema)}
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        problems.extend(_index_problems(index, indexes.get(str(index.name)), dialect))
    return problems


def verify_schema(conn: Connection, table: Table) -> None:
    """Raise :class:`SchemaMismatchError` unless the table, found to exist, matches the model.

    (:class:`TableMissingError` if it was dropped meanwhile.)
    """
    label = qualified_name(table)
    try:
        problems = _differences(inspect(conn), conn.dialect, table, allow_node_layout=True)
    except NoSuchTableError:
        raise TableMissingError(missing_table_message(label)) from None
    if not problems:
        return
    listing = "".join(f"\n  - {p}" for p in problems)
    raise SchemaMismatchError(
        f"the table {label} does not match sqlalchemy-awaitly's model:{listing}\n"
        f"{MIGRATE_HINT.capitalize()}, or create the store with verify_schema=False "
        f"to accept the table as it is.",
        problems,
    )


def _index_problems(index: Index, actual: Any, dialect: Dialect) -> list[str]:
    name = index.name
    if actual is None:
        return [f"index {name} is missing"]
    problems = []
    want_columns = [c.name for c in index.columns]
    if list(actual["column_names"]) != want_columns:
        problems.append(f"index {name} is on {actual['column_names']}, expected {want_columns}")
    if bool(actual.get("unique")) != bool(index.unique):
        problems.append(f"index {name} should {'' if index.unique else 'not '}be unique")
    want = _predicate(index.dialect_options[dialect.name].get("where"), dialect)
    got = _predicate(actual.get("dialect_options", {}).get(f"{dialect.name}_where"), dialect)
    if want != got:
        problems.append(f"index {name} has WHERE {got or '(none)'}, expected WHERE {want}")
    if actual.get("dialect_options", {}).get("postgresql_invalid"):
        problems.append(f"index {name} is invalid (a failed CREATE INDEX CONCURRENTLY?)")
    return problems


def _type_sql(type_: Any, dialect: Dialect) -> str:
    return str(type_.compile(dialect=dialect)).upper()


def _predicate(where: Any, dialect: Dialect) -> str | None:
    """A partial index's predicate as comparable text (catalogs add parentheses, quotes)."""
    if where is None:
        return None
    if isinstance(where, ClauseElement):
        where = where.compile(
            dialect=dialect, compile_kwargs={"include_table": False, "literal_binds": True}
        )
    text = re.sub(r"\s+", " ", str(where).replace('"', "")).strip().lower()
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    return text


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0
