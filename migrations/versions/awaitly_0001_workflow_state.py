"""Create the workflow state table, its "C"-collated key and the partial expiry index.

Revision ID: awaitly_0001
Revises:
Create Date: 2026-11-25

Frozen: written out as explicit operations, never importing the model, so
this history stays the same when the model changes (a test checks that the
two agree). The table is ``awaitly_workflow_state`` unless the migration run
names another (``sqlalchemy-awaitly migrate --table --schema``). The primary
key on a ``COLLATE "C"`` key is what serves prefix scans
(``keys("workflow:state:*")``) as an index range scan on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "awaitly_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("awaitly",)
depends_on: str | Sequence[str] | None = None


def target() -> tuple[str, str | None]:
    """The table to build: the default, unless this package's env.py was told another."""
    given = context.config.attributes
    return given.get("awaitly_table") or "awaitly_workflow_state", given.get("awaitly_schema")


def upgrade() -> None:
    table, schema = target()
    op.create_table(
        table,
        sa.Column(
            "key",
            sa.Text().with_variant(sa.Text(collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=f"{table}_pkey"),
        schema=schema,
    )
    op.create_index(
        f"idx_{table}_expires_at",
        table,
        ["expires_at"],
        schema=schema,
        postgresql_where=sa.text("expires_at IS NOT NULL"),
        sqlite_where=sa.text("expires_at IS NOT NULL"),
    )


def downgrade() -> None:
    table, schema = target()
    op.drop_index(f"idx_{table}_expires_at", table_name=table, schema=schema)
    op.drop_table(table, schema=schema)
