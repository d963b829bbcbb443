"""Empty databases for migration tests, and what their catalogs say.

Migrations must start from nothing, so each test gets its own database: a
fresh PostgreSQL database on the session's server, or a new SQLite file.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url


@contextmanager
def empty_postgres_database(server_url: str) -> Iterator[str]:
    """A new database on the server at ``server_url``, dropped afterwards."""
    name = f"mig_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def sqlite_file_url(directory: Path, name: str = "state.db") -> str:
    return f"sqlite:///{directory / name}"


def catalog(conn: Connection, *, without: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every table, column, constraint and index of the database, as the catalog shows them.

    Compared between a migrated database and one built from the model, this
    catches what Alembic's compare does not (collations, index predicates).
    Tables named in ``without`` (and everything on them) are left out.
    """
    if conn.dialect.name == "postgresql":
        found = _postgres_catalog(conn)
        return {k: [r for r in rows if r[1] not in without] for k, rows in found.items()}
    found = _sqlite_catalog(conn)
    return {
        k: v
        for k, v in found.items()
        if k.split(".")[0] not in without and not any(t in k for t in without)
    } | {"tables": [t for t in found["tables"] if t not in without]}


def _rows(conn: Connection, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(text(sql), params).all()]


def _postgres_catalog(conn: Connection) -> dict[str, Any]:
    schemas = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
    return {
        "columns": _rows(
            conn,
            f"""SELECT n.nspname, c.relname, a.attnum, a.attname,
                       format_type(a.atttypid, a.atttypmod), a.attnotnull,
                       co.collname, pg_get_expr(d.adbin, d.adrelid)
                FROM pg_attribute a
                JOIN pg_class c ON c.oid = a.attrelid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                LEFT JOIN pg_collation co ON co.oid = a.attcollation
                LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped AND {schemas}
                ORDER BY 1, 2, 3""",
        ),
        "constraints": _rows(
            conn,
            f"""SELECT n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)
                FROM pg_constraint k
                JOIN pg_class c ON c.oid = k.conrelid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE {schemas} ORDER BY 1, 2, 3""",
        ),
        "indexes": _rows(
            conn,
            f"""SELECT n.nspname, t.relname, pg_get_indexdef(c.oid), i.indisvalid
                FROM pg_index i
                JOIN pg_class c ON c.oid = i.indexrelid
                JOIN pg_class t ON t.oid = i.indrelid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE {schemas} ORDER BY 1, 2, 3""",
        ),
        "other_relations": _rows(
            conn,
            f"""SELECT n.nspname, c.relname, c.relkind FROM pg_class c
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind NOT IN ('r', 'i', 't') AND {schemas} ORDER BY 1, 2""",
        ),
    }


def _sqlite_catalog(conn: Connection) -> dict[str, Any]:
    tables = [
        name
        for (name,) in _rows(
            conn,
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
    ]
    result: dict[str, Any] = {"tables": tables}
    for table in tables:
        result[f"{table}.columns"] = _rows(conn, f'PRAGMA table_xinfo("{table}")')
        indexes = _rows(conn, f'PRAGMA index_list("{table}")')
        result[f"{table}.indexes"] = sorted(
            (name, unique, origin, partial) for _, name, unique, origin, partial in indexes
        )
        for _, name, *_ in indexes:
            result[f"{name}.columns"] = _rows(conn, f'PRAGMA index_xinfo("{name}")')
            (sql,) = conn.execute(
                text("SELECT sql FROM sqlite_master WHERE name = :n"), {"n": name}
            ).one()
            result[f"{name}.sql"] = " ".join((sql or "").replace('"', "").split())
    return result
