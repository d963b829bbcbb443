"""Alembic environment for sqlalchemy-awaitly's own table (the standalone path).

The database comes from ``-x url=...``, else ``DATABASE_URL``, else
``sqlalchemy.url`` in ``alembic.ini``; a caller may also hand in a
``Connection`` or ``Engine`` as ``config.attributes["connection"]`` (as
pytest-alembic does). Only the tables of the
model's ``MetaData`` are compared, so autogenerate never touches the app's own
tables, and the history is recorded in its own version table.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import MetaData, create_engine, pool
from sqlalchemy.engine import Connection, Engine

from sqlalchemy_awaitly.alembic import (
    database_url,
    migration_target,
    only_tables_of,
    version_table_for,
)
from sqlalchemy_awaitly.schema import DEFAULT_TABLE_NAME, Base, workflow_state_table

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

table_name, schema = migration_target()
# What the revisions read (they import nothing from the package, to stay frozen).
config.attributes.update(awaitly_table=table_name, awaitly_schema=schema)
if (table_name, schema) == (DEFAULT_TABLE_NAME, None):
    target_metadata = Base.metadata
else:  # sqlalchemy-awaitly migrate --table/--schema: the same model under that name
    target_metadata = MetaData()
    workflow_state_table(target_metadata, table_name, schema)


def configure(**given: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=version_table_for(table_name),
        version_table_schema=schema,
        include_object=only_tables_of(target_metadata),
        compare_type=True,
        **given,
    )


def url() -> str:
    x_url = context.get_x_argument(as_dictionary=True).get("url")
    return database_url(config, x_url).render_as_string(hide_password=False)


def run_offline() -> None:
    """``alembic upgrade head --sql``: print the SQL for a DBA to run."""
    configure(url=url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_on(connection: Connection) -> None:
    configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        run_on(given)
        return
    engine = given if isinstance(given, Engine) else create_engine(url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            run_on(connection)
    finally:
        if engine is not given:  # never dispose an engine the caller owns
            engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
