"""The host application's Alembic environment: the README's ``host_options`` hide
sqlalchemy-awaitly's table from autogenerate and keep the app's revisions here."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import context
from host_models import Base
from sqlalchemy import create_engine

from sqlalchemy_awaitly.alembic import host_options

engine = create_engine(os.environ["DATABASE_URL"])
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        **host_options(Path(__file__).parent / "versions"),
        include_schemas=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
