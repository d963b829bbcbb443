"""``sqlalchemy-awaitly migrate``: the packaged revisions, standalone."""

from __future__ import annotations

from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from ..alembic import BRANCH_LABEL, VERSION_TABLE, alembic_config
from ..config import url_of
from ..schema import DEFAULT_TABLE_NAME, WorkflowState
from ..schema_check import schema_problems
from .errors import NO_TABLE, Failure


def upgrade(url: str) -> str:
    """Run ``upgrade heads``; a table made earlier without Alembic is adopted if it matches."""
    resolved = url_of(url)
    engine = create_engine(resolved)
    try:
        with engine.connect() as conn:
            exists = inspect(conn).has_table(DEFAULT_TABLE_NAME)
            current = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE}
            ).get_current_heads()
            table = WorkflowState.__table__
            problems = schema_problems(conn, table, allow_node_layout=False) if exists else []
    finally:
        engine.dispose()
    config = alembic_config(resolved)
    if exists and not current:
        if problems:
            listing = "".join(f"\n  - {p}" for p in problems)
            raise Failure(
                f"the table {DEFAULT_TABLE_NAME} exists but was not made by these migrations, "
                f"and differs from the model:{listing}\nAlter it by hand, or move its rows "
                "and drop it, then migrate again.",
                NO_TABLE,
            )
        command.stamp(config, f"{BRANCH_LABEL}@head")
        return f"the existing table {DEFAULT_TABLE_NAME} matches the model: recorded as migrated"
    command.upgrade(config, "heads")
    return f"the table {DEFAULT_TABLE_NAME} is migrated to the latest revision"
