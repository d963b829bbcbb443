"""A mixed-case table or schema name that the store can create, it can also use.

SQLAlchemy quotes such a name when it creates the table (case kept); the
store's catalog lookups (``to_regclass``, ``::regclass`` in ``stats()``)
once passed it unquoted, which PostgreSQL folds to lower case: the table
was created, then reported missing by ``create_table=False`` and
``stats()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import PostgresHandle, StoreFactory, drop_table
from sqlalchemy import create_engine, text
from test_cli import cli

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, TableMissingError


@pytest.fixture
def mixed_name(make_store: StoreFactory, table_name: str) -> Iterator[str]:
    name = f"Mixed_{table_name}"
    yield name
    if make_store.backend == "postgresql":  # type: ignore[attr-defined]
        engine = create_engine(make_store.url)  # type: ignore[attr-defined]
        drop_table(engine, name)
        drop_table(engine, name.lower())
        engine.dispose()


def test_a_mixed_case_table_is_created_found_and_measured(
    make_store: StoreFactory, mixed_name: str
) -> None:
    creator: Any = make_store(table_name=mixed_name)
    creator.set("k", "v")
    assert creator.stats().rows == 1
    user: Any = make_store(table_name=mixed_name, create_table=False)
    assert user.get("k") == "v"
    assert user.stats().rows == 1
    if make_store.backend == "postgresql":  # type: ignore[attr-defined]
        engine = create_engine(make_store.url)  # type: ignore[attr-defined]
        with engine.connect() as conn:
            names = conn.execute(
                text("SELECT relname FROM pg_class WHERE lower(relname) = lower(:n)"),
                {"n": mixed_name},
            ).scalars()
            assert list(names) == [mixed_name]  # one table, its case kept
        engine.dispose()


@pytest.fixture
def pg_mixed_name(postgres: PostgresHandle, table_name: str) -> Iterator[str]:
    name = f"Mixed_{table_name}"
    yield name
    engine = create_engine(postgres.url)
    drop_table(engine, name)
    drop_table(engine, name.lower())
    engine.dispose()


@pytest.mark.postgres
def test_a_lower_case_twin_is_not_taken_for_it(
    postgres: PostgresHandle, pg_mixed_name: str
) -> None:
    with SQLAlchemyKeyValueStore(postgres.url, table_name=pg_mixed_name.lower()) as twin:
        twin.set("twin", "x")
    store = SQLAlchemyKeyValueStore(postgres.url, table_name=pg_mixed_name, create_table=False)
    with store, pytest.raises(TableMissingError):
        store.get("k")


@pytest.mark.postgres
def test_the_cli_reads_a_mixed_case_table(postgres: PostgresHandle, pg_mixed_name: str) -> None:
    with SQLAlchemyKeyValueStore(postgres.url, table_name=pg_mixed_name) as store:
        store.set("workflow:state:run-1", '{"formatVersion": 1, "steps": {}}')
    stats = cli("stats", "--url", postgres.url, "--table", pg_mixed_name)
    assert stats.returncode == 0 and "rows" in stats.stdout, stats.stderr
