"""The state table: one definition used by the model, auto-create and migrations."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, MetaData, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped

from .errors import InvalidInputError
from .validation import MAX_IDENTIFIER_LENGTH, check_identifier

DEFAULT_TABLE_NAME = "awaitly_workflow_state"

# Byte order is the natural order of keys, and a "C" key lets PostgreSQL serve
# prefix scans (LIKE 'p%' and key ranges, also under generic plans) from the
# primary key itself, whatever the database's default collation.
_KEY_TYPE = Text().with_variant(Text(collation="C"), "postgresql")


def expires_at_index_name(table_name: str) -> str:
    """The partial index name the Node.js adapter uses: ``idx_<table>_expires_at``."""
    name = f"idx_{table_name}_expires_at"
    if len(name) > MAX_IDENTIFIER_LENGTH:
        raise InvalidInputError(
            f"table name {table_name!r} is too long: its index name {name!r} "
            f"would exceed {MAX_IDENTIFIER_LENGTH} characters"
        )
    return name


def qualified_name(table: Table) -> str:
    """The table's name as messages show it."""
    return f"{table.schema}.{table.name}" if table.schema else table.name


def regclass_text(table: Table) -> str:
    """The table's name as ``to_regclass()`` and ``::regclass`` must read it.

    Each part double-quoted, so a mixed-case name means the table SQLAlchemy
    created under it (quoted, case kept) rather than its lower-cased twin.
    The names are plain identifiers (checked), so they hold no quote.
    """
    parts = (table.schema, table.name) if table.schema else (table.name,)
    return ".".join(f'"{part}"' for part in parts)


def workflow_state_table(
    metadata: MetaData,
    table_name: str = DEFAULT_TABLE_NAME,
    schema: str | None = None,
) -> Table:
    """Define the workflow state table on ``metadata``.

    A host application calls this with its own ``MetaData`` (and its own table
    name or schema) so that Alembic autogenerate sees the table exactly as
    this package creates it.
    """
    check_identifier(table_name, "table name")
    if schema is not None:
        check_identifier(schema, "schema name")
    table = Table(
        table_name,
        metadata,
        Column("key", _KEY_TYPE, primary_key=True),
        Column("value", Text, nullable=False),
        Column("expires_at", DateTime(timezone=True), nullable=True),
        schema=schema,
    )
    not_null = table.c.expires_at.is_not(None)
    Index(
        expires_at_index_name(table_name),
        table.c.expires_at,
        postgresql_where=not_null,
        sqlite_where=not_null,
    )
    return table


class Base(DeclarativeBase):
    """Declarative base owning this package's ``MetaData``."""


class WorkflowState(Base):
    """One stored key: workflow snapshots, idempotency records, leases, plain values."""

    __table__ = workflow_state_table(Base.metadata)

    key: Mapped[str]
    value: Mapped[str]
    expires_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"WorkflowState(key={self.key!r}, expires_at={self.expires_at!r})"
