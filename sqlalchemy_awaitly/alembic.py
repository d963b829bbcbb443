"""Alembic integration: where the packaged revisions are, and hooks for host apps.

Two ways for an application that manages its schema with Alembic:

* run this package's own revisions from its history: add
  :data:`VERSIONS_RESOURCE` (or :func:`versions_location`) to
  ``version_locations`` and ``alembic upgrade heads``; :data:`include_object`
  keeps the app's autogenerate from proposing to drop our table;
* own the table: put :func:`~sqlalchemy_awaitly.workflow_state_table` on the
  app's ``MetaData`` (any name, any schema) and autogenerate a revision.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData
from sqlalchemy.engine import URL

from .config import url_of
from .errors import ConfigurationError
from .schema import DEFAULT_TABLE_NAME
from .validation import MAX_IDENTIFIER_LENGTH, check_identifier

#: The branch label of this package's revisions (``alembic upgrade awaitly@head``).
BRANCH_LABEL = "awaitly"
#: Alembic's version table for the standalone environment, apart from an app's
#: own ``alembic_version`` so the two histories never meet by accident.
VERSION_TABLE = "awaitly_alembic_version"
#: The revisions as an Alembic package resource, for ``version_locations`` in
#: an ``alembic.ini`` (use ``path_separator = space``: the resource has a colon).
VERSIONS_RESOURCE = "sqlalchemy_awaitly:migrations/versions"

IncludeObject = Callable[[Any, "str | None", str, bool, Any], bool]

_PACKAGE = Path(__file__).resolve().parent


def script_location() -> str:
    """The directory of the packaged Alembic environment (``env.py``, ``versions/``).

    In an installed wheel it sits inside the package; in a source checkout it
    is the repository's top-level ``migrations/``, the one copy both use.
    """
    for candidate in (_PACKAGE / "migrations", _PACKAGE.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return str(candidate)
    raise ConfigurationError(f"the packaged Alembic migrations are missing next to {_PACKAGE}")


def versions_location() -> str:
    """The directory of the packaged revisions, for a host's ``version_locations``."""
    return str(Path(script_location()) / "versions")


def ignore_workflow_state(
    table_name: str = DEFAULT_TABLE_NAME,
    schema: str | None = None,
    *,
    also: IncludeObject | None = None,
) -> IncludeObject:
    """An ``include_object`` hook that hides our table from a host's autogenerate.

    A host that runs our revisions (rather than owning the table in its own
    ``MetaData``) would otherwise see the table as unknown and generate a
    ``DROP``. ``also`` chains the host's own hook.
    """
    hidden = {(schema, table_name), (schema, VERSION_TABLE)}

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        table = obj if type_ == "table" else getattr(obj, "table", None)
        if table is not None and (table.schema, table.name) in hidden:
            return False
        return also is None or also(obj, name, type_, reflected, compare_to)

    return include_object


#: :func:`ignore_workflow_state` for the default table name in the default schema.
include_object: IncludeObject = ignore_workflow_state()

ProcessRevisionDirectives = Callable[[Any, Any, list[Any]], None]


def keep_host_revisions_in(
    versions: str | os.PathLike[str], branch_label: str | None = None
) -> ProcessRevisionDirectives:
    """A ``process_revision_directives`` hook: a host's new revisions go in ``versions``,
    after the host's own head, never after ours.

    With our revisions in ``version_locations``, ``alembic revision`` would
    base a host's first revision on our head (then the only one) and write it
    next to ours, inside the installed package; and every later one would
    stop at "Multiple heads are present". Here a revision whose head was not
    chosen (``--head``) goes after the host's single head, or starts the
    host's history (as ``branch_label``) if it has none yet.
    """
    folder = os.fspath(versions)

    def process(context: Any, revision: Any, directives: list[Any]) -> None:
        script = ScriptDirectory.from_config(context.config)
        packaged = Path(versions_location()).resolve()
        ours = {
            r.revision for r in script.walk_revisions() if Path(r.path).resolve().parent == packaged
        }
        for directive in directives:
            if directive.head in (None, "head"):  # not chosen on the command line
                host_heads = [h for h in script.get_heads() if h not in ours]
                if not host_heads:
                    directive.head = "base"
                    directive.branch_label = directive.branch_label or branch_label
                elif len(host_heads) == 1:
                    directive.head = host_heads[0]
            if directive.head not in ours and directive.version_path is None:
                directive.version_path = folder

    return process


def host_options(
    versions: str | os.PathLike[str],
    *,
    branch_label: str | None = None,
    table_name: str = DEFAULT_TABLE_NAME,
    schema: str | None = None,
    also: IncludeObject | None = None,
) -> dict[str, Any]:
    """What a host's ``env.py`` adds to each ``context.configure(...)`` call to run our
    revisions in its history: ``**host_options(Path(__file__).parent / "versions")``.

    ``include_object`` hides our table from the host's autogenerate (chaining
    ``also``, the host's own hook), and :func:`keep_host_revisions_in` keeps
    the host's revisions in ``versions`` on its own branch.
    """
    return {
        "include_object": ignore_workflow_state(table_name, schema, also=also),
        "process_revision_directives": keep_host_revisions_in(versions, branch_label),
    }


def only_tables_of(metadata: MetaData) -> IncludeObject:
    """An ``include_object`` hook that compares only ``metadata``'s tables.

    The standalone environment shares the database with the app's own tables;
    it must never generate a ``DROP`` of those.
    """

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        table = obj if type_ == "table" else getattr(obj, "table", None)
        return table is None or table.key in metadata.tables

    return include_object


def database_url(config: Config, x_url: str | None = None) -> URL:
    """The standalone environment's database.

    In order: the URL given to :func:`alembic_config`, ``-x url=...``,
    ``DATABASE_URL``, ``sqlalchemy.url`` in ``alembic.ini``. A plain
    ``postgresql://`` means psycopg 3, as everywhere in this package.
    """
    given = (
        config.attributes.get("awaitly_url")
        or x_url
        or os.environ.get("DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
    )
    if not given:
        raise ConfigurationError(
            "no database for the migrations: pass -x url=postgresql://user:pass@host/db, "
            "set DATABASE_URL, or set sqlalchemy.url in alembic.ini"
        )
    return url_of(given)


def alembic_config(
    url: str | URL | None = None,
    *,
    table_name: str = DEFAULT_TABLE_NAME,
    schema: str | None = None,
) -> Config:
    """A :class:`~alembic.config.Config` for the packaged environment, without an ini file.

    ``command.upgrade(alembic_config(url), "heads")`` migrates ``url`` (or
    ``DATABASE_URL``) the way ``alembic upgrade heads`` does from a checkout.
    ``table_name`` and ``schema`` make the revisions build that table instead,
    with its own history (:func:`version_table_for`).
    """
    check_identifier(table_name, "table name")
    if schema is not None:
        check_identifier(schema, "schema name")
    config = Config()
    config.set_main_option("script_location", script_location())
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        config.attributes["awaitly_url"] = rendered
    config.attributes["awaitly_table"] = table_name
    config.attributes["awaitly_schema"] = schema
    return config


def version_table_for(table_name: str) -> str:
    """Where the standalone history of ``table_name`` is kept: one history per table."""
    if table_name == DEFAULT_TABLE_NAME:
        return VERSION_TABLE
    name = f"{table_name}_alembic_version"
    if len(name) > MAX_IDENTIFIER_LENGTH:
        raise ConfigurationError(
            f"table name {table_name!r} is too long for its version table {name!r} "
            f"({MAX_IDENTIFIER_LENGTH} characters at most)"
        )
    return name


def migration_target() -> tuple[str, str | None]:
    """The table the packaged revisions build: the default one, unless :func:`alembic_config`
    (``sqlalchemy-awaitly migrate --table/--schema``) or ``-x awaitly_table=`` /
    ``-x awaitly_schema=`` name another. Called inside a migration run only."""
    from alembic import context

    given = context.config.attributes
    x = context.get_x_argument(as_dictionary=True)
    table = given.get("awaitly_table") or x.get("awaitly_table") or DEFAULT_TABLE_NAME
    schema = given.get("awaitly_schema") or x.get("awaitly_schema") or None
    check_identifier(table, "table name")
    if schema is not None:
        check_identifier(schema, "schema name")
    return table, schema
