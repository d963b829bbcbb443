"""``sqlalchemy-awaitly demo``: a checkout crashes half-way, and the recovery worker
resumes it.

A process starts the checkout workflow of the demo's registry (``demo_app``)
and is killed (SIGKILL, by itself) as it starts creating the order. The demo
shows what is stored, then starts ``sqlalchemy-awaitly worker`` on that
registry, which finds the crashed run once its lease lapses and finishes it,
and stops the worker with SIGTERM. It counts every step's side effect in the
database: a step whose checkpoint was saved must not have run again (exit code
1 if one did).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from typing import Any

import click
from sqlalchemy import Engine, MetaData, Table, delete, inspect, select

from ..config import shown_url
from ..persistence import create_postgres_persistence
from ..schema import DEFAULT_TABLE_NAME
from . import demo_app
from .demo_app import STEPS, effects, effects_engine
from .errors import NOT_FOUND, Failure, explained

LEASE_SECONDS = 2.0
APP = "sqlalchemy_awaitly.cli.demo_app:registry"
WORKER_BOUND = 60.0  # seconds the demo waits for the worker to resume the run


@click.command()
@click.option("--url", envvar="DATABASE_URL", help="database (default: a new SQLite file)")
@click.option("--keep", is_flag=True, help="keep the tables and rows the demo made, to look at")
@click.option("--workflow-id", hidden=True, default=None)
def demo(url: str | None, keep: bool, workflow_id: str | None) -> None:
    """Run a checkout workflow, crash it half-way, let the recovery worker resume it.

    Without --url, in a SQLite file in a temp directory of its own. What the
    demo creates (its tables, its rows, that directory) is removed at the
    end unless --keep; tables that were there before are left.
    """
    folder = None if url else tempfile.mkdtemp(prefix="sqlalchemy-awaitly-demo-")
    url = url or f"sqlite:///{os.path.join(str(folder), 'demo.db')}"
    workflow_id = workflow_id or f"checkout-{uuid.uuid4().hex[:6]}"
    try:
        with explained(url):
            engine = effects_engine(url)
            try:
                made = [t for t in (effects.name, DEFAULT_TABLE_NAME) if not _exists(engine, t)]
                effects.create(engine, checkfirst=True)
                state = create_postgres_persistence(url)  # creates the state table if missing
                try:
                    _story(url, workflow_id, engine, state)
                finally:
                    state.close()
                    if not keep:
                        _clean_up(engine, workflow_id, made)
            finally:
                engine.dispose()
    except KeyboardInterrupt:
        click.echo("interrupted: the demo stopped, and removed what it made", err=True)
        sys.exit(130)  # 128 + SIGINT, as a shell reports it
    finally:
        if folder is not None and not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _exists(engine: Engine, table: str) -> bool:
    with engine.connect() as conn:
        return inspect(conn).has_table(table)


def _clean_up(engine: Engine, workflow_id: str, made: list[str]) -> None:
    """Drop the tables the demo made; in a table that was there, delete only its own rows."""
    with engine.begin() as conn:
        if effects.name not in made:
            conn.execute(delete(effects).where(effects.c.workflow_id == workflow_id))
        for table in made:
            Table(table, MetaData()).drop(conn, checkfirst=True)


def _story(url: str, workflow_id: str, engine: Engine, state: Any) -> None:
    say = click.echo
    say("A checkout workflow that crashes half-way, then is resumed by the recovery worker.")
    say(f"database: {shown_url(url)}\n")
    say(f"1. A process starts {workflow_id} through the app's workflow registry:")
    first = _first_process(url, workflow_id)
    if first != -signal.SIGKILL:
        raise Failure(f"the first process should have been killed, but exited with {first}", 1)
    stored = state.load(workflow_id) or {"steps": {}}
    saved = list(stored["steps"])
    recorded = stored.get("metadata", {}).get("sqlalchemyAwaitly", {}).get("workflow", {})
    say("\n2. What the database holds for it now:")
    say(f"   checkpointed steps: {', '.join(saved) or 'none'}")
    say(f"   workflow: {recorded.get('type')} v{recorded.get('version')}, "
        f"input {json.dumps(recorded.get('input'))}")  # fmt: skip
    say(f"   status: {stored.get('execution', {}).get('status', '-')} (the run never finished)")
    say("")
    say(f"3. The recovery worker (sqlalchemy-awaitly worker --app {APP})")
    say(f"   finds it once the killed process's lease lapses (up to {LEASE_SECONDS:g} s):")
    _recovery_worker(url, workflow_id)

    with engine.connect() as conn:
        ran = [
            step
            for (step,) in conn.execute(
                select(effects.c.step).where(effects.c.workflow_id == workflow_id)
            )
        ]
    counts = {step: ran.count(step) for step in STEPS}
    say("\n4. Side effects, counted in the database:")
    for step in STEPS:
        mark = "checkpointed before the crash" if step in saved else "run by the worker"
        say(f"   {step:<18} {counts[step]}x  ({mark})")
    again = [step for step in saved if counts[step] != 1]
    missing = [step for step in STEPS if counts[step] == 0]
    if again or missing or state.load(workflow_id) is not None:
        raise Failure(f"the story did not hold: ran again {again}, never ran {missing}", NOT_FOUND)
    say("\nThe story held: no checkpointed step ran again, and the finished run's state is gone.")


def _child(args: list[str], url: str) -> subprocess.Popen[str]:
    """A process of the demo's, in a session of its own: Ctrl-C reaches only the demo,
    which kills it and goes on up."""
    return subprocess.Popen(
        [sys.executable, "-m", "sqlalchemy_awaitly", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "DATABASE_URL": url},
    )


def _first_process(url: str, workflow_id: str) -> int:
    """Start the run in a process that is killed half-way; its exit status."""
    process = _child(["demo-worker", url, workflow_id], url)
    assert process.stdout is not None
    try:
        for line in process.stdout:
            click.echo(f"   {line.rstrip()}")
        return process.wait()
    finally:
        _ended(process)


def _recovery_worker(url: str, workflow_id: str) -> None:
    """Run ``sqlalchemy-awaitly worker`` until it has dealt with the run, then stop it
    with SIGTERM, as a deployment would."""
    args = ["worker", "--app", APP, "--url", url, "--poll", "0.5"]
    worker = _child([*args, "--lease-ttl", f"{LEASE_SECONDS:g}"], url)
    assert worker.stdout is not None
    bound = threading.Timer(WORKER_BOUND, worker.kill)  # a bug fails the demo, never hangs it
    bound.start()
    try:
        for line in worker.stdout:
            click.echo(f"   {line.rstrip()}")
            if line.startswith(f"{workflow_id}: "):
                click.echo("   (the demo stops the worker: SIGTERM)")
                worker.send_signal(signal.SIGTERM)
        code = worker.wait()
    finally:
        bound.cancel()
        _ended(worker)
    if code != 0:
        raise Failure(f"the recovery worker failed (exit code {code})", 1)


def _ended(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


@click.command("demo-worker", hidden=True)
@click.argument("url")
@click.argument("workflow_id")
def demo_worker(url: str, workflow_id: str) -> None:
    """The demo's first process: start the checkout, and be killed at create-order."""
    demo_app.crash_at = "create-order"
    state = create_postgres_persistence(url)
    try:
        order = {"id": workflow_id, "user": "123", "sku": "book", "amount": 42}
        demo_app.registry.start(
            state, "checkout", id=workflow_id, input=order, lease_ttl=LEASE_SECONDS
        )
        click.echo("the run ended: it should have been killed")
        sys.exit(1)
    finally:
        state.close()
