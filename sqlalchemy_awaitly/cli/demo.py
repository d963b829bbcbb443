"""``sqlalchemy-awaitly demo``: a checkout crashes half-way, and a new process resumes it.

A worker process runs the seed's checkout workflow and is killed (SIGKILL,
by itself) as it starts creating the order. The demo then shows what is
stored, lets a second worker finish the run, and counts every step's side
effect in the database: a step whose checkpoint was saved must not have run
again (exit code 1 if one did).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import click
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    delete,
    insert,
    inspect,
    select,
)

from .. import durable
from ..config import shown_url, url_of
from ..persistence import create_postgres_persistence
from ..schema import DEFAULT_TABLE_NAME
from .errors import NOT_FOUND, Failure, explained

STEPS = ["fetch-user", "reserve-stock", "charge-card", "create-order", "send-confirmation"]
CRASH_AT = "create-order"
LEASE_SECONDS = 2.0

effects = Table(
    "awaitly_demo_effects",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workflow_id", Text, nullable=False),
    Column("step", Text, nullable=False),
    Column("pid", Integer, nullable=False),
)


def effects_engine(url: str) -> Engine:
    resolved = url_of(url)
    return create_engine(resolved)


@click.command()
@click.option("--url", envvar="DATABASE_URL", help="database (default: a new SQLite file)")
@click.option("--keep", is_flag=True, help="keep the tables and rows the demo made, to look at")
@click.option("--workflow-id", hidden=True, default=None)
def demo(url: str | None, keep: bool, workflow_id: str | None) -> None:
    """Run a checkout workflow, crash it half-way, resume it in a new process.

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
    say("A checkout workflow that crashes half-way, then resumes in a new process.")
    say(f"database: {shown_url(url)}\n")
    say(f"1. A worker process starts {workflow_id}:")
    first = _worker(url, workflow_id, crash=True)
    if first != -signal.SIGKILL:
        raise Failure(f"the first worker should have been killed, but exited with {first}", 1)
    stored = state.load(workflow_id) or {"steps": {}}
    saved = list(stored["steps"])
    say("\n2. What the database holds for it now:")
    say(f"   checkpointed steps: {', '.join(saved) or 'none'}")
    say(f"   status: {stored.get('execution', {}).get('status', '-')} (the run never finished)")
    say("")
    say("3. A new worker process runs the same workflow id:")
    second = _worker(url, workflow_id, crash=False)
    if second != 0:
        raise Failure(f"the resuming worker failed (exit code {second})", 1)

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
        mark = "checkpointed before the crash" if step in saved else "run by the new worker"
        say(f"   {step:<18} {counts[step]}x  ({mark})")
    again = [step for step in saved if counts[step] != 1]
    missing = [step for step in STEPS if counts[step] == 0]
    if again or missing or state.load(workflow_id) is not None:
        raise Failure(f"the story did not hold: ran again {again}, never ran {missing}", NOT_FOUND)
    say("\nThe story held: no checkpointed step ran again, and the finished run's state is gone.")


def _worker(url: str, workflow_id: str, *, crash: bool) -> int:
    """Run one worker to its end; Ctrl-C (which reaches only the demo: the worker has
    a session of its own) kills it and goes on up."""
    args = [sys.executable, "-m", "sqlalchemy_awaitly", "demo-worker", url, workflow_id]
    worker = subprocess.Popen(
        [*args, *(["--crash"] if crash else [])],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert worker.stdout is not None
    try:
        for line in worker.stdout:
            click.echo(f"   {line.rstrip()}")
        return worker.wait()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


@click.command("demo-worker", hidden=True)
@click.argument("url")
@click.argument("workflow_id")
@click.option("--crash", is_flag=True)
def demo_worker(url: str, workflow_id: str, crash: bool) -> None:
    """One process of the demo: run the checkout; with --crash, die at create-order."""
    pid = os.getpid()
    engine = effects_engine(url)
    state = create_postgres_persistence(url)

    def say(text: str) -> None:
        click.echo(text)
        sys.stdout.flush()

    def effect(step: str, value: Any) -> Any:
        def run() -> Any:
            if crash and step == CRASH_AT:
                say(f"{step:<18} the worker (pid {pid}) is killed here: SIGKILL")
                os.kill(pid, signal.SIGKILL)
            with engine.begin() as conn:
                conn.execute(insert(effects).values(workflow_id=workflow_id, step=step, pid=pid))
            time.sleep(0.2)  # something to watch
            say(f"{step:<18} ran in pid {pid} -> {json.dumps(value)}")
            return value

        return run

    def charge(conn: Any) -> Any:  # writes and checkpoint in one transaction
        conn.execute(insert(effects).values(workflow_id=workflow_id, step="charge-card", pid=pid))
        value = {"charge": "ch_1", "amount": 42}
        say(f"{'charge-card':<18} ran in pid {pid} -> {json.dumps(value)} (in one transaction)")
        return value

    def checkout(step: Any, deps: Any) -> Any:
        user = step(effect("fetch-user", {"id": "123", "name": "Alice"}), key="fetch-user")
        step(effect("reserve-stock", {"sku": "book", "reserved": 1}), key="reserve-stock")
        step.transaction(charge, key="charge-card")
        order = step(effect("create-order", {"id": "order-1", "userId": user["id"]}),
                     key="create-order")  # fmt: skip
        step(effect("send-confirmation", {"to": user["name"], "order": order["id"]}),
             key="send-confirmation")  # fmt: skip
        return order

    def skipped(event: durable.DurableEvent) -> None:
        if event.type == "step_skipped":
            say(f"{event.step_key:<18} skipped: its outcome is stored")

    waited = False
    try:
        while True:
            result = durable.run(
                None, checkout, id=workflow_id, store=state,
                lease_ttl=LEASE_SECONDS, on_event=skipped,
            )  # fmt: skip
            busy = isinstance(result.error if not result.ok else None, durable.ConcurrentExecution)
            if not busy:
                break
            if not waited:
                say(f"(the killed worker's lease blocks the id for up to {LEASE_SECONDS:g} s)")
                waited = True
            time.sleep(0.2)
        say(f"result: {result}")
        if not result.ok:
            sys.exit(1)
    finally:
        state.close()
        engine.dispose()
