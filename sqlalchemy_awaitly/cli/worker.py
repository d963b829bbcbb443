"""``sqlalchemy-awaitly worker --app module:registry``: resume crashed runs in a loop.

The first SIGTERM or SIGINT stops it gracefully: no new run starts, running
ones finish their step, end before the next, release their lease and stay
resumable (a stop is not a cancellation). If they have not within ``--grace``
seconds, or at a second signal, the process exits at once and their leases
expire instead: the runs stay resumable either way.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from types import FrameType

import click

from .. import durable
from ..aio import AsyncSQLAlchemyKeyValueStore
from ..config import shown_url
from ..durable import Outcome, Registry, Resumption
from ..durable.results import Err
from ..durable.values import text_of
from ..persistence import AsyncStatePersistence, StatePersistence
from .errors import BAD_INPUT, Failure, explained

INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


def load_registry(app: str) -> Registry:
    """``module:attribute`` (attribute may be dotted), imported from the current
    directory first, as gunicorn and Celery do."""
    module_name, _, attribute = app.partition(":")
    if not module_name or not attribute:
        raise Failure(f"--app must be module:attribute, got {app!r}", BAD_INPUT)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: object = importlib.import_module(module_name)
    except ImportError as e:
        raise Failure(f"cannot import {module_name!r}: {e}", BAD_INPUT) from None
    for name in attribute.split("."):
        if not hasattr(found, name):
            raise Failure(f"{module_name!r} has no attribute {attribute!r}", BAD_INPUT)
        found = getattr(found, name)
    if not isinstance(found, Registry):
        kind = type(found).__name__
        raise Failure(f"{app} is a {kind}, not a durable.Registry", BAD_INPUT)
    if not found.entries():
        raise Failure(f"{app} has no registered workflows", BAD_INPUT)
    return found


def described(done: Resumption) -> str:
    """One line for a run the worker dealt with."""
    shown = text_of(done.workflow_id)
    if done.outcome is Outcome.RESUMED:
        result = done.result
        if isinstance(result, Err):
            error = result.error
            kind = getattr(error, "type", None) or type(error).__name__
            return f"{shown}: resumed, ended with an error ({kind})"
        return f"{shown}: resumed, completed"
    if done.outcome is Outcome.SKIPPED:
        return f"{shown}: skipped, another process resumed it first"
    if done.outcome is Outcome.STOPPED:
        return f"{shown}: stopped before its next step; resumable"
    return f"{shown}: left alone ({done.outcome.value}): {done.detail}"


class Shutdown:
    """The signal handlers: the first signal stops the worker, a second (or the
    grace period running out) exits at once."""

    def __init__(self, worker: durable.Worker, grace: float) -> None:
        self.worker, self.grace = worker, grace
        self.asked = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.handle)
        signal.signal(signal.SIGINT, self.handle)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.asked:
            self.exit_now("a second signal")
        self.asked = True
        running, name = self.worker.running, signal.Signals(signum).name
        waits = (
            f"{running} running run(s) finish their step and stay resumable, " if running else ""
        )
        click.echo(f"stopping ({name}): {waits}no new run starts", err=True)
        self.worker.stop()
        timer = threading.Timer(self.grace, self.exit_now, ("the grace period ending",))
        timer.daemon = True
        timer.start()

    def exit_now(self, why: str) -> None:
        left = self.worker.running
        click.echo(f"exiting at {why}: {left} run(s) left to their leases (resumable)", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED)  # running steps cannot be stopped; their leases expire


def run_worker(
    state: StatePersistence,
    url: str,
    table: str,
    schema: str | None,
    key_prefix: str,
    registry: Registry,
    concurrency: int,
    poll: float,
    grace: float,
    lease_ttl: float,
) -> None:
    lock = threading.Lock()

    def heard(done: Resumption) -> None:
        with lock:
            click.echo(described(done))
            sys.stdout.flush()

    def async_store() -> AsyncStatePersistence:
        kv = AsyncSQLAlchemyKeyValueStore(url, table_name=table, schema=schema, create_table=False)
        return AsyncStatePersistence(kv, key_prefix)

    needs_async = any(entry.is_async for entry in registry.entries())
    worker = durable.Worker(
        state,
        registry,
        async_store=async_store if needs_async else None,
        concurrency=concurrency,
        poll_interval=poll,
        on_resumption=heard,
        lease_ttl=lease_ttl,
    )
    Shutdown(worker, grace).install()
    names = ", ".join(f"{e.type} v{e.version}" for e in registry.entries())
    click.echo(
        f"worker {os.getpid()}: resuming crashed runs of {names} in {shown_url(url)} "
        f"every {poll:g} s, {concurrency} at a time"
    )
    sys.stdout.flush()
    with explained(url, table, schema):
        totals = worker.run()
    click.echo(
        f"stopped: {len(totals.resumed)} resumed, {len(totals.stopped)} stopped (resumable), "
        f"{len(totals.skipped)} skipped, "
        f"{len(totals.unknown) + len(totals.unregistered) + len(totals.errors)} left alone"
    )
