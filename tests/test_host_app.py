"""A host application with its own models and Alembic history takes our table both ways.

1. Through ``version_locations``: the app's ``alembic.ini`` names the
   revisions packaged in the installed wheel, and ``alembic upgrade heads``
   creates its tables and ours; ``include_object`` keeps its autogenerate
   from dropping our table.
2. By owning the table: the app puts it on its own ``MetaData`` under its own
   name and schema and autogenerates a revision in its own history.

Either way the store then runs with ``create_table=False`` as a role that may
only SELECT, INSERT, UPDATE and DELETE. The app's files are the README's
snippets (checked below), run as a user runs them: the ``alembic`` command,
with the package installed from the wheel the build configuration makes.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from databases import empty_postgres_database
from doc_snippets import block
from sqlalchemy import MetaData, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from sqlalchemy_awaitly import (
    SchemaMismatchError,
    SQLAlchemyKeyValueStore,
    create_postgres_persistence,
    workflow_state_table,
)
from sqlalchemy_awaitly.alembic import include_object
from sqlalchemy_awaitly.schema_check import schema_problems

ROOT = Path(__file__).resolve().parent.parent
HOST_APP = Path(__file__).resolve().parent / "host_app"
OWNED_TABLE = 'workflow_state = workflow_state_table(Base.metadata, "wf_state", schema="app")'

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as a wheel installs it: built by the project's build config, unpacked."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [str(ROOT / "scripts" / "uv"), "build", "--wheel", "--out-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("*.whl")
    site = out / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


@pytest.fixture
def database(postgres: object) -> Iterator[str]:
    with empty_postgres_database(postgres.url) as url:  # type: ignore[attr-defined]
        yield url


@pytest.fixture
def host_app(tmp_path: Path) -> Path:
    app = tmp_path / "host_app"
    shutil.copytree(HOST_APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    return app


def alembic(app: Path, database: str, site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``alembic`` command in the host app, importing the package from the wheel."""
    env = os.environ | {"DATABASE_URL": database, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(app / "alembic.ini"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=app,  # not the checkout, whose sources would shadow the wheel
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def dml_role(database: str) -> Iterator[str]:
    """A login role with no rights beyond what each test grants it."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    admin = create_engine(database, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {name} LOGIN"))
    yield name
    with admin.connect() as conn:
        conn.execute(text(f"DROP OWNED BY {name}"))
    admin.dispose()
    # The role outlives its database's privileges only until the database is dropped.
    server = create_engine(
        make_url(database).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with server.connect() as conn:
        conn.execute(text(f"DROP ROLE IF EXISTS {name}"))
    server.dispose()


def grant_dml(database: str, role: str, table: str, schema: str = "public") -> str:
    admin = create_engine(database, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {role}"))
        conn.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.{table} TO {role}"))
    admin.dispose()
    return make_url(database).set(username=role, password=None).render_as_string(False)


def store_works_without_ddl_rights(url: str, table_name: str, schema: str | None) -> None:
    engine = create_engine(url)
    with engine.connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
        conn.execute(text("CREATE TABLE not_allowed (id int)"))
    engine.dispose()
    options = {"table_name": table_name, "schema": schema, "create_table": False}
    with SQLAlchemyKeyValueStore(url, **options) as store:
        store.set("session:1", "a", ttl=3600)
        store.set_many({"session:2": "b", "session:3": "c"})
        assert store.get("session:1") == "a"
        assert store.keys("session:*") == ["session:1", "session:2", "session:3"]
        assert store.delete_many(["session:2", "session:3"]) == 2
        assert store.purge_expired() == 0
        assert store.stats().rows == 1
    persistence = create_postgres_persistence(url, **options)
    try:
        persistence.save(
            "run-1", {"formatVersion": 1, "steps": {}, "execution": {"status": "running"}}
        )
        assert persistence.list() == ["run-1"]
        assert persistence.load("run-1") is not None
        persistence.delete("run-1")
    finally:
        persistence.close()


def test_upgrade_heads_runs_the_packaged_revisions_in_the_host_history(
    host_app: Path, database: str, installed_wheel: Path, dml_role: str
) -> None:
    where = subprocess.run(
        [sys.executable, "-c", "import sqlalchemy_awaitly; print(sqlalchemy_awaitly.__file__)"],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": str(installed_wheel)},
        cwd=host_app,
        check=True,
    ).stdout
    assert Path(where.strip()).is_relative_to(installed_wheel)  # not the source checkout

    heads = alembic(host_app, database, installed_wheel, "heads").stdout
    assert "host_0001 (head)" in heads and "awaitly_0001 (awaitly) (head)" in heads
    alembic(host_app, database, installed_wheel, "upgrade", "heads")

    engine = create_engine(database)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == {
                "alembic_version",
                "orders",
                "awaitly_workflow_state",
            }
            versions = set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
            assert versions == {"host_0001", "awaitly_0001"}
            assert schema_problems(conn, _default_table(), allow_node_layout=False) == []
            # The host's autogenerate sees nothing to do, and without the hook
            # it would drop our table.
            host = _host_metadata(host_app)
            assert _diff(conn, host, include_object) == []
            assert ("remove_table", "awaitly_workflow_state") in [
                (d[0], d[1].name) for d in _diff(conn, host, None) if d[0] == "remove_table"
            ]
    finally:
        engine.dispose()
    # And the host's own autogenerate command agrees.
    revision = alembic(
        host_app,
        database,
        installed_wheel,
        "revision",
        "--autogenerate",
        "-m",
        "nothing",
    )
    (generated,) = [p for p in (host_app / "migrations" / "versions").glob("*nothing*.py")]
    assert "drop_table" not in generated.read_text(), revision.stdout

    store_works_without_ddl_rights(
        grant_dml(database, dml_role, "awaitly_workflow_state"), "awaitly_workflow_state", None
    )


def test_host_owning_the_table_autogenerates_it_under_its_own_name_and_schema(
    host_app: Path, database: str, installed_wheel: Path, dml_role: str
) -> None:
    models = host_app / "host_models.py"
    models.write_text(
        models.read_text()
        + "\n\nfrom sqlalchemy_awaitly import workflow_state_table  # noqa: E402\n\n"
        + OWNED_TABLE
        + "\n"
    )
    ini = host_app / "alembic.ini"
    ini.write_text(ini.read_text().replace(" sqlalchemy_awaitly:migrations/versions", ""))
    admin = create_engine(database, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE SCHEMA app"))  # the host's DBA makes its schemas
    admin.dispose()

    alembic(host_app, database, installed_wheel, "upgrade", "heads")
    alembic(
        host_app, database, installed_wheel, "revision", "--autogenerate", "-m", "workflow state"
    )
    (generated,) = (host_app / "migrations" / "versions").glob("*_state.py")
    source = generated.read_text()
    assert "op.create_table('wf_state'" in source and "schema='app'" in source
    assert "collation='C'" in source and "postgresql_where" in source
    alembic(host_app, database, installed_wheel, "upgrade", "heads")

    engine = create_engine(database)
    try:
        with engine.connect() as conn:
            table = workflow_state_table(MetaData(), "wf_state", schema="app")
            assert schema_problems(conn, table, allow_node_layout=False) == []
            assert _diff(conn, _host_metadata(host_app), include_object) == []
    finally:
        engine.dispose()
    store_works_without_ddl_rights(
        grant_dml(database, dml_role, "wf_state", "app"), "wf_state", "app"
    )


def test_a_table_that_drifted_from_the_model_fails_closed(database: str) -> None:
    engine = create_engine(database)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE awaitly_workflow_state (key text PRIMARY KEY, value text)"))
    engine.dispose()
    with pytest.raises(SchemaMismatchError) as caught:
        SQLAlchemyKeyValueStore(database, create_table=False).setup()
    message = str(caught.value)
    assert "alembic upgrade heads" in message
    assert "column value should be NOT NULL" in message
    assert "column expires_at is missing" in message
    assert "index idx_awaitly_workflow_state_expires_at is missing" in message
    # Opting out accepts the table as it is.
    store = SQLAlchemyKeyValueStore(database, create_table=False, verify_schema=False)
    store.setup()
    store.close()


def follow_the_ini_recipe(ini: Path, database: str) -> None:
    """Each README line replaces the line of its name (uncommented first, else commented)."""
    lines = ini.read_text().splitlines()
    for wanted in block("alembic-host-ini").strip().splitlines():
        name = wanted.split("=")[0].strip()
        if name == "sqlalchemy.url":
            wanted = f"sqlalchemy.url = {database}"
        plain = [i for i, line in enumerate(lines) if line.split("=")[0].strip() == name]
        commented = [
            i for i, line in enumerate(lines) if line.lstrip("# ").split("=")[0].strip() == name
        ]
        (plain or commented)[0:1] or pytest.fail(f"alembic init wrote no {name} line")
        lines[(plain or commented)[0]] = wanted
    ini.write_text("\n".join(lines) + "\n")


def follow_the_env_recipe(env: Path) -> None:
    source = env.read_text()
    assert source.count("target_metadata=target_metadata") == 2  # both configure calls
    source = source.replace(
        "from alembic import context\n",
        "from alembic import context\n" + block("alembic-host-env") + "\nimport models\n",
    )
    source = source.replace("target_metadata = None", "target_metadata = models.Base.metadata")
    source = source.replace(
        "target_metadata=target_metadata", "target_metadata=target_metadata, **awaitly_options"
    )
    env.write_text(source)


MODELS = """
from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
"""
CUSTOMERS = """

class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
"""


def test_the_readme_recipe_from_alembic_init(
    tmp_path: Path, database: str, installed_wheel: Path
) -> None:
    """``alembic init``, the README's edits and commands verbatim: the host's revisions,
    the first one included, land in its own folder on its own branch."""
    app = tmp_path / "app"
    app.mkdir()

    def run(command: str) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-m", *shlex.split(command)]
        env = os.environ | {"PYTHONPATH": str(installed_wheel)}
        env.pop("DATABASE_URL", None)
        done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=app, timeout=120)
        assert done.returncode == 0, command + "\n" + done.stdout + done.stderr
        return done

    run("alembic init migrations")
    follow_the_ini_recipe(app / "alembic.ini", database)
    follow_the_env_recipe(app / "migrations" / "env.py")
    (app / "models.py").write_text(MODELS)
    packaged = set((installed_wheel / "sqlalchemy_awaitly" / "migrations" / "versions").iterdir())

    commands = block("alembic-host-commands").strip().splitlines()
    for command in commands:
        run(command)
    (app / "models.py").write_text(MODELS + CUSTOMERS)
    for command in commands[1:]:
        run(command.replace("add orders", "add customers"))

    versions = app / "migrations" / "versions"
    first, second = (
        next(versions.glob(f"*_add_{name}.py")).read_text() for name in ("orders", "customers")
    )
    assert "down_revision: Union[str, Sequence[str], None] = None" in first
    assert "branch_labels: Union[str, Sequence[str], None] = ('app',)" in first
    assert "create_table('orders'" in first and "awaitly_workflow_state" not in first
    assert "create_table('customers'" in second and "awaitly_workflow_state" not in second
    first_id = re.findall(r"^revision: str = '(\w+)'", first, re.M)[0]
    assert f"down_revision: Union[str, Sequence[str], None] = '{first_id}'" in second
    assert set((installed_wheel / "sqlalchemy_awaitly" / "migrations" / "versions").iterdir()) == (
        packaged
    )
    assert tables_and_versions(database) == (
        {"alembic_version", "orders", "customers", "awaitly_workflow_state"},
        2,
    )


def tables_and_versions(database: str) -> tuple[set[str], int]:
    """The tables in ``database``, and how many heads its ``alembic_version`` records."""
    engine = create_engine(database)
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
            return set(inspect(conn).get_table_names()), len(versions)
    finally:
        engine.dispose()


def _default_table():  # type: ignore[no-untyped-def]
    return workflow_state_table(MetaData())


def _host_metadata(app: Path) -> MetaData:
    """The host's models, imported from its (possibly edited) copy."""
    name = f"host_models_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, app / "host_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # SQLAlchemy resolves annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module.Base.metadata  # type: ignore[no-any-return]


def _diff(conn, metadata, hook):  # type: ignore[no-untyped-def]
    opts = {"compare_type": True, "include_schemas": True}
    if hook is not None:
        opts["include_object"] = hook
    return compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)
