"""``sqlalchemy-awaitly``: the demo, and operator commands for any database URL.

Imported only by the console script and ``python -m sqlalchemy_awaitly``;
``import sqlalchemy_awaitly`` never loads click.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import make_url

from .. import durable
from ..durable.values import text_of
from ..persistence import DEFAULT_PREFIX, StatePersistence
from ..schema import DEFAULT_TABLE_NAME
from ..store import SQLAlchemyKeyValueStore
from ..wire import json_text
from ..wire.documents import decode_state
from .errors import BAD_INPUT, CORRUPT_ROWS, NOT_FOUND, Failure, explained

URL_HELP = "SQLAlchemy URL of the database (default: $DATABASE_URL)"


def database_options(command: Any) -> Any:
    """--url, --table, --schema and --key-prefix, shared by the operator commands."""
    for option in reversed(
        [
            click.option("--url", envvar="DATABASE_URL", help=URL_HELP),
            click.option("--table", default=DEFAULT_TABLE_NAME, show_default=True),
            click.option("--schema", default=None, help="PostgreSQL schema of the table"),
            click.option(
                "--key-prefix", default=DEFAULT_PREFIX, show_default=True,
                help="prefix of workflow state keys",
            ),
        ]
    ):  # fmt: skip
        command = option(command)
    return command


@contextmanager
def opened(
    url: str | None, table: str, schema: str | None, key_prefix: str
) -> Iterator[StatePersistence]:
    """The state of an existing table: no DDL, and a missing SQLite file is an error."""
    if not url:
        raise Failure("no database: pass --url or set DATABASE_URL", BAD_INPUT)
    with explained(url, table, schema):
        _refuse_missing_sqlite_file(url)
        store = SQLAlchemyKeyValueStore(url, table_name=table, schema=schema, create_table=False)
        try:
            store.setup()
            yield StatePersistence(store, key_prefix)
        finally:
            store.close()


def _refuse_missing_sqlite_file(url: str) -> None:
    try:
        parsed = make_url(url)
    except Exception:
        return  # the store says why
    path = parsed.database
    sqlite_file = parsed.get_backend_name() == "sqlite" and path not in (None, "", ":memory:")
    if sqlite_file and not Path(str(path)).exists():  # connecting would create an empty one
        raise Failure(f"no SQLite database at {path}", BAD_INPUT)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sqlalchemy-awaitly", prog_name="sqlalchemy-awaitly")
def main() -> None:
    """Durable-workflow state in your SQLAlchemy database: a demo, and operator commands.

    Exit codes: 0 done; 1 not found (an unknown id, nothing to retry, a
    corrupt row) or the demo's story failed; 2 bad input (a bad URL or
    option); 3 the database cannot be reached; 4 the table is missing or not
    as the model says; 5 the database is busy; 6 `list` listed everything but
    some rows cannot be read; 130 interrupted (Ctrl-C).
    """


@main.command("list")
@database_options
@click.argument("id_prefix", default="", required=False)
@click.option("--limit", type=click.IntRange(min=0), default=None)
@click.option("--json", "as_json", is_flag=True, help="one JSON array, for scripts")
def list_command(
    url: str | None,
    table: str,
    schema: str | None,
    key_prefix: str,
    id_prefix: str,
    limit: int | None,
    as_json: bool,
) -> None:
    """Stored runs not completed (running, failed, crashed, corrupt), newest first.

    ID_PREFIX: only the workflow ids starting with it.
    """
    with opened(url, table, schema, key_prefix) as state, explained(url, table, schema):
        runs = durable.list_pending(state, prefix=id_prefix, limit=limit)
    if as_json:
        click.echo(json.dumps([run.as_json() for run in runs], indent=2))
    elif not runs:
        click.echo(f"no stored runs under {key_prefix}{id_prefix}*")
    else:
        _print_runs(runs)
    corrupt = sum(1 for run in runs if run.corrupt)
    if corrupt:
        click.echo(f"{corrupt} stored run(s) cannot be read: listed as corrupt", err=True)
        sys.exit(CORRUPT_ROWS)


def _print_runs(runs: list[durable.PendingRun]) -> None:
    """The fields of ``list --json``, as a table: ID, STATE, STEPS, LAST UPDATE, DETAIL."""
    rows = [("ID", "STATE", "STEPS", "LAST UPDATE", "DETAIL")]
    for run in runs:
        detail = f"step {run.failed_step} failed" if run.failed_step else ""
        if run.holder is not None and run.state is durable.RunState.RUNNING:
            detail = f"held by {text_of(run.holder)}"
        if run.corrupt:
            detail = run.corrupt
        shown_id = text_of(run.id)  # a damaged SQLite key may hold lone surrogates
        rows.append((shown_id, str(run.state), str(run.steps), run.last_updated or "-", detail))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        line = (
            f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  "
            f"{row[3]:<{widths[3]}}  {row[4]}"
        )
        click.echo(line.rstrip())


@main.command()
@database_options
@click.argument("workflow_id")
@click.option("--raw", is_flag=True, help="the stored JSON as it is, pretty-printed")
def show(
    url: str | None, table: str, schema: str | None, key_prefix: str, workflow_id: str, raw: bool
) -> None:
    """WORKFLOW_ID's stored steps as a timeline: each step's outcome, and a failure's
    error type and message (--raw: the stored snapshot)."""
    from .timeline import timeline

    with opened(url, table, schema, key_prefix) as state, explained(url, table, schema):
        text = state.load_raw(workflow_id)
        if text is None:
            raise Failure(f"no stored workflow {workflow_id!r} under {key_prefix}", NOT_FOUND)
        snapshot = decode_state(state.key(workflow_id), text)
        listed = durable.list_pending(state, prefix=workflow_id) if not raw else []
    if raw:
        click.echo(json_text.pretty(snapshot))
        return
    run = next((r for r in listed if r.id == workflow_id), None)
    for line in timeline(workflow_id, snapshot, run):
        click.echo(line)


@main.command()
@database_options
@click.argument("workflow_ids", nargs=-1, required=True)
def delete(
    url: str | None, table: str, schema: str | None, key_prefix: str, workflow_ids: tuple[str, ...]
) -> None:
    """Forget the stored state of each WORKFLOW_ID (the next run starts over)."""
    missing = []
    with opened(url, table, schema, key_prefix) as state, explained(url, table, schema):
        for workflow_id in workflow_ids:
            if durable.delete_state(state, workflow_id):
                click.echo(f"deleted {workflow_id}")
            else:
                missing.append(workflow_id)
    if missing:
        raise Failure(f"no stored workflow: {', '.join(missing)}", NOT_FOUND)


@main.command()
@database_options
@click.argument("workflow_id")
@click.option("--step", "step_key", default=None, help="only this step (default: every failed one)")
def retry(
    url: str | None,
    table: str,
    schema: str | None,
    key_prefix: str,
    workflow_id: str,
    step_key: str | None,
) -> None:
    """Clear WORKFLOW_ID's stored failure, so its next run executes that step again."""
    with opened(url, table, schema, key_prefix) as state, explained(url, table, schema):
        if state.load_raw(workflow_id) is None:
            raise Failure(f"no stored workflow {workflow_id!r} under {key_prefix}", NOT_FOUND)
        cleared = durable.retry_step(state, workflow_id, step_key)
    if not cleared:
        which = f"step {step_key!r}" if step_key else "any step"
        raise Failure(f"{workflow_id}: no stored failure of {which}", NOT_FOUND)
    click.echo(f"{workflow_id}: cleared {', '.join(cleared)}; the next run executes it again")


@main.command()
@database_options
@click.argument("workflow_id")
@click.option("--reason", default=None, help="why, kept with the run and in its error")
def cancel(
    url: str | None,
    table: str,
    schema: str | None,
    key_prefix: str,
    workflow_id: str,
    reason: str | None,
) -> None:
    """Cancel WORKFLOW_ID: a running run stops before its next step, a stopped one is
    marked cancelled; neither is resumed until `uncancel`."""
    with opened(url, table, schema, key_prefix) as state, explained(url, table, schema):
        done = durable.cancel(state, workflow_id, reason)
    if not done:
        raise Failure(f"no stored workflow {workflow_id!r} under {key_prefix}", NOT_FOUND)
    click.echo(f"{workflow_id}: cancelled (a running run stops before its next step)")


@main.command()
@database_options
@click.argument("workflow_id")
def uncancel(
    url: str | None, table: str, schema: str | None, key_prefix: str, workflow_id: str
) -> None:
    """Clear WORKFLOW_ID's cancellation, so its next run resumes it."""
    with opened(url, table, schema, key_prefix) as state, explained(url, table, schema):
        if state.load_raw(workflow_id) is None:
            raise Failure(f"no stored workflow {workflow_id!r} under {key_prefix}", NOT_FOUND)
        cleared = durable.uncancel(state, workflow_id)
    if not cleared:
        raise Failure(f"{workflow_id}: not cancelled", NOT_FOUND)
    click.echo(f"{workflow_id}: cancellation cleared; the next run resumes it")


@main.command("purge-expired")
@database_options
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True)
def purge_expired(
    url: str | None, table: str, schema: str | None, key_prefix: str, batch_size: int
) -> None:
    """Delete expired rows in batches (a progress line on a terminal)."""
    tty = sys.stderr.isatty()

    def progress(total: int) -> None:
        if tty:
            click.echo(f"\rpurged {total:,} ...", nl=False, err=True)

    with opened(url, table, schema, key_prefix) as state, explained(url, table, schema):
        total = state.store.purge_expired(batch_size, on_batch=progress)
    if tty:
        click.echo("\r", nl=False, err=True)
    click.echo(f"purged {total:,} expired rows")


@main.command()
@database_options
def stats(url: str | None, table: str, schema: str | None, key_prefix: str) -> None:
    """Rows, expired rows, and (on PostgreSQL) table and index sizes."""
    with opened(url, table, schema, key_prefix) as state, explained(url, table, schema):
        found = state.store.stats()
    click.echo(f"rows          {found.rows:,}")
    click.echo(f"expired rows  {found.expired_rows:,}")
    for label, value in (
        ("total size", found.total_bytes),
        ("table size", found.table_bytes),
        ("index size", found.index_bytes),
    ):
        if value is not None:
            click.echo(f"{label:<13} {_size(value)}")


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError


@main.command()
@click.option("--url", envvar="DATABASE_URL", help=URL_HELP)
@click.option("--table", default=DEFAULT_TABLE_NAME, show_default=True)
@click.option("--schema", default=None, help="PostgreSQL schema of the table (it must exist)")
def migrate(url: str | None, table: str, schema: str | None) -> None:
    """Create or upgrade the table with the packaged Alembic revisions."""
    from .migrate import upgrade

    if not url:
        raise Failure("no database: pass --url or set DATABASE_URL", BAD_INPUT)
    with explained(url, table, schema):
        click.echo(upgrade(url, table, schema))


@main.command()
@database_options
@click.option("--app", required=True, help="module:attribute of your durable.Registry")
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.01),
    default=5.0,
    show_default=True,
    help="seconds between looks for crashed runs",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="seconds a stop waits for running steps before exiting anyway",
)
@click.option(
    "--lease-ttl", type=click.FloatRange(min=0.1), default=durable.DEFAULT_LEASE_TTL,
    show_default=True, help="lease of each resumed run, in seconds",
)  # fmt: skip
def worker(
    url: str | None,
    table: str,
    schema: str | None,
    key_prefix: str,
    app: str,
    concurrency: int,
    poll: float,
    grace: float,
    lease_ttl: float,
) -> None:
    """Resume crashed runs of the workflows registered in APP, until SIGTERM/SIGINT.

    A run is crashed when its process died: no live lease, no stored failure,
    not cancelled. A stop lets running steps finish (up to --grace seconds)
    and leaves their runs resumable.
    """
    from .worker import load_registry, run_worker

    registry = load_registry(app)
    with opened(url, table, schema, key_prefix) as state:
        assert url is not None  # opened refuses a missing URL
        run_worker(
            state, url, table, schema, key_prefix, registry, concurrency, poll, grace, lease_ttl
        )


from .demo import demo, demo_worker  # noqa: E402  (registers the demo commands)

main.add_command(demo)
main.add_command(demo_worker)
