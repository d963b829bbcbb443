"""The packaged Alembic revisions agree with the model, and undo cleanly.

Alembic's own compare does not look at a partial index's predicate or a
column's collation, so each check also reads the database catalog and holds
it against a database built straight from the model.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from databases import catalog, empty_postgres_database, sqlite_file_url
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    inspect,
    text,
)

from sqlalchemy_awaitly import (
    SchemaMismatchError,
    SQLAlchemyKeyValueStore,
    WorkflowState,
    workflow_state_table,
)
from sqlalchemy_awaitly.alembic import (
    BRANCH_LABEL,
    VERSION_TABLE,
    alembic_config,
    ignore_workflow_state,
    include_object,
    only_tables_of,
    script_location,
    versions_location,
)
from sqlalchemy_awaitly.schema import Base
from sqlalchemy_awaitly.schema_check import schema_problems

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend."""
    if request.param == "sqlite":
        yield sqlite_file_url(tmp_path, "migrated.db")
        return
    with empty_postgres_database(request.getfixturevalue("postgres").url) as url:
        yield url


def _engine(url: str) -> Engine:
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def _model_catalog(empty_url: str, tmp_path: Path) -> dict[str, object]:
    """The catalog of another empty database after ``create_all`` from the model."""
    if empty_url.startswith("sqlite"):
        return _created_catalog(sqlite_file_url(tmp_path, "model.db"))
    server = empty_url.rsplit("/", 1)[0] + "/postgres"
    with empty_postgres_database(server) as url:
        return _created_catalog(url)


def _created_catalog(url: str) -> dict[str, object]:
    engine = _engine(url)
    try:
        Base.metadata.create_all(engine)
        with engine.connect() as conn:
            return catalog(conn)
    finally:
        engine.dispose()


def test_upgrade_head_matches_the_model(empty_url: str, tmp_path: Path) -> None:
    command.upgrade(alembic_config(empty_url), "heads")
    engine = _engine(empty_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_object": only_tables_of(Base.metadata),
                    "version_table": VERSION_TABLE,
                },
            )
            assert compare_metadata(context, Base.metadata) == []
            assert schema_problems(conn, WorkflowState.__table__, allow_node_layout=False) == []
            migrated = catalog(conn, without=(VERSION_TABLE,))
            if conn.dialect.name == "postgresql":
                # What Alembic's compare cannot see, read from the catalog itself.
                (key_collation,) = conn.execute(
                    text(
                        "SELECT collation_name FROM information_schema.columns "
                        "WHERE table_name = 'awaitly_workflow_state' AND column_name = 'key'"
                    )
                ).one()
                assert key_collation == "C"
                definitions = sorted(r[2] for r in migrated["indexes"])
                assert definitions == [
                    "CREATE INDEX idx_awaitly_workflow_state_expires_at ON "
                    "public.awaitly_workflow_state USING btree (expires_at) "
                    "WHERE (expires_at IS NOT NULL)",
                    "CREATE UNIQUE INDEX awaitly_workflow_state_pkey ON "
                    "public.awaitly_workflow_state USING btree (key)",
                ]
            else:
                assert migrated["idx_awaitly_workflow_state_expires_at.sql"] == (
                    "CREATE INDEX idx_awaitly_workflow_state_expires_at ON "
                    "awaitly_workflow_state (expires_at) WHERE expires_at IS NOT NULL"
                )
    finally:
        engine.dispose()
    assert migrated == _model_catalog(empty_url, tmp_path)


def test_upgrade_downgrade_upgrade_ends_identical_and_leaves_nothing(empty_url: str) -> None:
    config = alembic_config(empty_url)
    engine = _engine(empty_url)
    try:
        with engine.connect() as conn:
            before = catalog(conn)
        command.upgrade(config, "heads")
        with engine.connect() as conn:
            first = catalog(conn)
        command.downgrade(config, f"{BRANCH_LABEL}@base")
        with engine.connect() as conn:
            # Only Alembic's own (now empty) version table remains.
            assert catalog(conn, without=(VERSION_TABLE,)) == before
            assert conn.execute(text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar() == 0
        command.upgrade(config, "heads")
        with engine.connect() as conn:
            assert catalog(conn) == first
    finally:
        engine.dispose()


def test_history_is_one_frozen_branch() -> None:
    script = ScriptDirectory(script_location())
    assert len(script.get_heads()) == 1
    (base,) = script.get_bases()
    assert script.get_revision(base).branch_labels == {BRANCH_LABEL}
    for path in Path(versions_location()).glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        } | {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        # A revision that imported the model would change whenever the model does.
        assert not any(name.startswith("sqlalchemy_awaitly") for name in imported), path


def test_source_checkout_uses_the_top_level_migrations() -> None:
    assert Path(script_location()) == ROOT / "migrations"


def _alembic_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


@pytest.mark.slow
def test_cli_takes_the_url_from_x_then_database_url(tmp_path: Path) -> None:
    from_x, from_env = tmp_path / "x.db", tmp_path / "env.db"
    done = _alembic_cli(
        "-x", f"url=sqlite:///{from_x}", "upgrade", "head", env={"DATABASE_URL": "sqlite://"}
    )
    assert done.returncode == 0, done.stderr
    done = _alembic_cli("upgrade", "head", env={"DATABASE_URL": f"sqlite:///{from_env}"})
    assert done.returncode == 0, done.stderr
    for path in (from_x, from_env):
        engine = create_engine(f"sqlite:///{path}")
        try:
            assert "awaitly_workflow_state" in inspect(engine).get_table_names()
        finally:
            engine.dispose()


@pytest.mark.slow
def test_cli_without_a_url_says_where_to_give_one() -> None:
    done = _alembic_cli("upgrade", "head")
    assert done.returncode != 0
    assert "-x url=" in done.stderr and "DATABASE_URL" in done.stderr


@pytest.mark.slow
def test_offline_sql_for_a_dba_has_the_collated_key_and_partial_index() -> None:
    done = _alembic_cli("-x", "url=postgresql://app@db/app", "upgrade", "head", "--sql")
    assert done.returncode == 0, done.stderr
    assert 'key TEXT COLLATE "C" NOT NULL' in done.stdout
    assert (
        "CREATE INDEX idx_awaitly_workflow_state_expires_at ON awaitly_workflow_state "
        "(expires_at) WHERE expires_at IS NOT NULL;" in done.stdout
    )
    assert f"INSERT INTO {VERSION_TABLE}" in done.stdout


def test_ignore_workflow_state_hides_only_our_tables_and_chains_the_hosts_hook() -> None:
    host = MetaData()
    ours = workflow_state_table(host, "wf_state", schema="app")
    default = workflow_state_table(MetaData())
    orders = Table("orders", host, Column("id", Integer, primary_key=True))
    hook = ignore_workflow_state("wf_state", "app", also=lambda o, n, t, r, c: n != "orders")
    assert not hook(ours, "wf_state", "table", True, None)
    (index,) = ours.indexes
    assert not hook(index, index.name, "index", True, None)
    assert not hook(ours.c.key, "key", "column", True, None)
    assert hook(default, default.name, "table", True, None)  # another schema: not ours
    assert not hook(orders, "orders", "table", True, None)  # the host's hook decides
    assert not include_object(default, default.name, "table", True, None)
    version = Table(VERSION_TABLE, MetaData(), Column("version_num", String(32)))
    assert not include_object(version, VERSION_TABLE, "table", True, None)


def test_sqlite_table_without_the_index_fails_the_start_up_check(tmp_path: Path) -> None:
    url = sqlite_file_url(tmp_path)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE awaitly_workflow_state "
                "(key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL, expires_at DATETIME)"
            )
        )
    engine.dispose()
    with pytest.raises(SchemaMismatchError) as caught:
        SQLAlchemyKeyValueStore(url, create_table=False).setup()
    assert caught.value.problems == ["index idx_awaitly_workflow_state_expires_at is missing"]
    assert "alembic upgrade heads" in str(caught.value)
