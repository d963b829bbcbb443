"""The host application's Alembic environment, hiding sqlalchemy-awaitly's table from
autogenerate (its revisions come from the package, not from this app's models)."""

from __future__ import annotations

import os

from alembic import context
from host_models import Base
from sqlalchemy import create_engine

from sqlalchemy_awaitly.alembic import include_object

engine = create_engine(os.environ["DATABASE_URL"])
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_object=include_object,
        include_schemas=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
