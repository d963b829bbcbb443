"""Create the workflow state table, its "C"-collated key and the partial expiry index.

Revision ID: awaitly_0001
Revises:
Create Date: 2026-11-25

Frozen: written out as explicit operations, never importing the model, so
this history stays the same when the model changes (a test checks that the
two agree). The primary key on a ``COLLATE "C"`` key is what serves prefix
scans (``keys("workflow:state:*")``) as an index range scan on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "awaitly_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("awaitly",)
depends_on: str | Sequence[str] | None = None

TABLE = "awaitly_workflow_state"
INDEX = "idx_awaitly_workflow_state_expires_at"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column(
            "key",
            sa.Text().with_variant(sa.Text(collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=f"{TABLE}_pkey"),
    )
    op.create_index(
        INDEX,
        TABLE,
        ["expires_at"],
        postgresql_where=sa.text("expires_at IS NOT NULL"),
        sqlite_where=sa.text("expires_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name=TABLE)
    op.drop_table(TABLE)
