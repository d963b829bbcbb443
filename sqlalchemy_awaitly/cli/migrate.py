"""``sqlalchemy-awaitly migrate``: the packaged revisions, standalone."""

from __future__ import annotations

from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect

from ..alembic import BRANCH_LABEL, alembic_config, version_table_for
from ..config import url_of
from ..schema import qualified_name, workflow_state_table
from ..schema_check import schema_problems
from .errors import NO_TABLE, Failure


def upgrade(url: str, table_name: str, schema: str | None) -> str:
    """Run ``upgrade heads``; a table made earlier without Alembic is adopted if it matches."""
    resolved = url_of(url)
    table = workflow_state_table(MetaData(), table_name, schema)
    label = qualified_name(table)
    engine = create_engine(resolved)
    try:
        with engine.connect() as conn:
            exists = inspect(conn).has_table(table_name, schema=schema)
            opts = {"version_table": version_table_for(table_name), "version_table_schema": schema}
            current = MigrationContext.configure(conn, opts=opts).get_current_heads()
            problems = schema_problems(conn, table, allow_node_layout=False) if exists else []
    finally:
        engine.dispose()
    config = alembic_config(resolved, table_name=table_name, schema=schema)
    if exists and not current:
        if problems:
            listing = "".join(f"\n  - {p}" for p in problems)
            raise Failure(
                f"the table {label} exists but was not made by these migrations, "
                f"and differs from the model:{listing}\nAlter it by hand, or move its rows "
                "and drop it, then migrate again.",
                NO_TABLE,
            )
        command.stamp(config, f"{BRANCH_LABEL}@head")
        return f"the existing table {label} matches the model: recorded as migrated"
    command.upgrade(config, "heads")
    return f"the table {label} is migrated to the latest revision"
