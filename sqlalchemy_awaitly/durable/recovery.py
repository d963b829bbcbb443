"""Recovery: finding crashed runs of registered workflows and resuming them.

:func:`recover` (and ``recover_async``) is one pass over the stored runs; the
:class:`~sqlalchemy_awaitly.durable.worker.Worker` runs passes in a loop. Both
resume only ``crashed`` runs (the run-state model: no live lease, no stored
failure, not cancelled), and only resume: a run whose row is gone by the time
its lease is taken ended elsewhere and is not started over.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import CorruptStateError
from ..wire.documents import LOCK_PREFIX, decode_state
from .api import run_registered, run_registered_async
from .drivers import AsyncIO, SyncIO, adrive, async_backend, drive, sync_backend
from .errors import DurableUsageError
from .helpers import PendingRun, list_pending, list_pending_async
from .registry import Registered, Registry, made_async
from .requests import Load, Plan
from .results import ConcurrentExecution, Err, NothingToResume, Result, WorkflowStopped
from .run_states import RunState
from .waits import REGISTERED, WAITS


class Outcome(str, Enum):
    """What recovery did with one crashed run."""

    RESUMED = "resumed"  # run to an end: its result (an Err stored as a failure) is kept
    SKIPPED = "skipped"  # another process had its lease first, or has ended it
    STOPPED = "stopped"  # a shutdown stopped it before its next step: still resumable
    UNKNOWN = "unknown"  # its recorded type and version are not registered here
    UNREGISTERED = "unregistered"  # not started through a registry: nothing to call
    ERROR = "error"  # resuming it raised (the deps factory, a usage error)


@dataclass(frozen=True)
class Resumption:
    """One crashed run's :class:`Outcome`: the run's result if it ran, else why not."""

    workflow_id: str
    outcome: Outcome
    result: Result[Any, Any] | None = None
    detail: str = ""


@dataclass
class Recovery:
    """What one :func:`recover` pass (or a worker, so far) did."""

    resumed: dict[str, Result[Any, Any]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # another process had it first
    unknown: dict[str, str] = field(default_factory=dict)  # id: why it was left alone
    unregistered: list[str] = field(default_factory=list)  # not started through a registry
    stopped: list[str] = field(default_factory=list)  # by a shutdown: still resumable
    errors: dict[str, str] = field(default_factory=dict)  # id: what resuming it raised

    def add(self, done: Resumption) -> None:
        i, outcome = done.workflow_id, done.outcome
        if outcome is Outcome.RESUMED:
            assert done.result is not None
            self.resumed[i] = done.result
        elif outcome is Outcome.UNKNOWN:
            self.unknown[i] = done.detail
        elif outcome is Outcome.ERROR:
            self.errors[i] = done.detail
        else:
            {
                Outcome.SKIPPED: self.skipped,
                Outcome.STOPPED: self.stopped,
                Outcome.UNREGISTERED: self.unregistered,
            }[outcome].append(i)


def _recorded(text: str | None, key: str) -> dict[str, Any] | None:
    """A row's registered record (type, version, input), or None."""
    if text is None:
        return None
    try:
        metadata = decode_state(key, text).get("metadata") or {}
    except CorruptStateError:
        return None
    section = metadata.get(WAITS)
    record = section.get(REGISTERED) if isinstance(section, dict) else None
    return dict(record) if isinstance(record, dict) and "type" in record else None


def resumable(
    registry: Registry, workflow_id: str, key: str, text: str | None
) -> tuple[Registered, Any] | Resumption:
    """The registered workflow and the input to resume run ``workflow_id`` (stored as
    ``text`` under ``key``) with; if there is none, the :class:`Resumption` saying why."""
    if text is None:
        return Resumption(workflow_id, Outcome.SKIPPED, detail="ended by another process")
    record = _recorded(text, key)
    if record is None:
        return Resumption(
            workflow_id, Outcome.UNREGISTERED, detail="not started through a registry"
        )
    entry = registry.get(record.get("type"), record.get("version"))
    if entry is None:
        described = json.dumps({k: record.get(k) for k in ("type", "version")})
        return Resumption(
            workflow_id, Outcome.UNKNOWN, detail=f"no registered workflow {described}"
        )
    return entry, record.get("input")


def known_run(
    registry: Registry, prefix: str, workflow_id: str
) -> Plan[tuple[Registered, Any] | Resumption]:
    """Read run ``workflow_id``'s row (under state ``prefix``): what :func:`resumable`
    says of it. One plan for the sync and asyncio passes and the worker."""
    key = prefix + workflow_id
    text = yield Load(key)
    return resumable(registry, workflow_id, key, text if isinstance(text, str) else None)


def ended(workflow_id: str, result: Result[Any, Any]) -> Resumption:
    """The :class:`Resumption` of a run of ``workflow_id`` that came back with ``result``."""
    if isinstance(result, Err) and isinstance(result.error, (ConcurrentExecution, NothingToResume)):
        return Resumption(workflow_id, Outcome.SKIPPED, result)
    if isinstance(result, Err) and isinstance(result.error, WorkflowStopped):
        return Resumption(workflow_id, Outcome.STOPPED, result)
    return Resumption(workflow_id, Outcome.RESUMED, result)


def recover(
    store: object,
    registry: Registry,
    *,
    limit: int | None = None,
    state_prefix: str | None = None,
    lock_prefix: str = LOCK_PREFIX,
    **options: Any,
) -> Recovery:
    """Resume the crashed runs of registered workflows, at most ``limit`` of them, one
    after another. Failed, cancelled and running ones are left alone, and a run
    another process resumes first is skipped (its lease decides). ``options`` are
    ``durable.run``'s for each resumed run. For a loop, see :class:`Worker`."""
    backend = sync_backend(store, state_prefix)
    io = SyncIO(backend)
    found = Recovery()
    for workflow_id in _crashed(
        list_pending(store, state_prefix=state_prefix, lock_prefix=lock_prefix), limit
    ):
        known = drive(known_run(registry, backend.prefix, workflow_id), io)
        if isinstance(known, Resumption):
            found.add(known)
            continue
        entry, input_value = known
        found.add(
            resumed(entry, input_value, workflow_id, store, state_prefix, lock_prefix, options)
        )
    return found


def resumed(
    entry: Registered,
    input_value: Any,
    workflow_id: str,
    store: object,
    state_prefix: str | None,
    lock_prefix: str,
    options: dict[str, Any],
) -> Resumption:
    """Run ``entry`` on ``store`` to resume ``workflow_id`` with ``input_value``."""
    arguments = _resuming(
        entry, input_value, workflow_id, store, state_prefix, lock_prefix, options
    )
    return ended(workflow_id, run_registered(entry.made_deps(), **arguments))


def _resuming(
    entry: Registered,
    input_value: Any,
    workflow_id: str,
    store: object,
    state_prefix: str | None,
    lock_prefix: str,
    options: dict[str, Any],
) -> dict[str, Any]:
    """``run_registered``'s arguments (but deps) to resume ``workflow_id``: only resume."""
    given = {"store": store, "prefix": state_prefix, "lock_prefix": lock_prefix, **options}
    return entry.run_arguments(input_value, id=workflow_id, resume_only=True, **given)


async def recover_async(
    store: object,
    registry: Registry,
    *,
    limit: int | None = None,
    concurrency: int = 8,
    state_prefix: str | None = None,
    lock_prefix: str = LOCK_PREFIX,
    **options: Any,
) -> Recovery:
    """The asyncio :func:`recover`: up to ``concurrency`` runs resumed at a time."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise DurableUsageError(f"concurrency must be a positive int, got {concurrency!r}")
    backend = async_backend(store, state_prefix)
    io = AsyncIO(backend)
    found = Recovery()
    gate = asyncio.Semaphore(concurrency)
    pending = await list_pending_async(store, state_prefix=state_prefix, lock_prefix=lock_prefix)

    async def resume(workflow_id: str) -> None:
        async with gate:
            known = await adrive(known_run(registry, backend.prefix, workflow_id), io)
            if isinstance(known, Resumption):
                found.add(known)
                return
            entry, input_value = known
            found.add(
                await resumed_async(
                    entry, input_value, workflow_id, store, state_prefix, lock_prefix, options
                )
            )

    await asyncio.gather(*(resume(i) for i in _crashed(pending, limit)))
    return found


async def resumed_async(
    entry: Registered,
    input_value: Any,
    workflow_id: str,
    store: object,
    state_prefix: str | None,
    lock_prefix: str,
    options: dict[str, Any],
) -> Resumption:
    """The asyncio :func:`resumed` (``entry`` is an ``async def`` workflow)."""
    arguments = _resuming(
        entry, input_value, workflow_id, store, state_prefix, lock_prefix, options
    )
    return ended(workflow_id, await run_registered_async(await made_async(entry), **arguments))


def _crashed(runs: list[PendingRun], limit: int | None) -> list[str]:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise DurableUsageError(f"limit must be a non-negative int or None, got {limit!r}")
    ids = [r.id for r in runs if r.state is RunState.CRASHED]
    return ids if limit is None else ids[:limit]
