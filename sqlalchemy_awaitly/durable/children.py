"""Child workflows (``step.workflow``): a run of its own, as one step of its parent.

awaitly 1.35's ``step.workflow`` is a step whose function returns the child's
result, stored as any step's outcome; so is this one. The child is a
``durable.run`` on the parent's store with its own id, row and lease, so:

- a parent resumed after the child's step was stored replays it (the child
  does not run again);
- a parent that crashed while the child ran resumes the child, which resumes
  from its own row (after waiting out the crashed process's lease on it);
- a parent that crashed after the child ended but before its own checkpoint
  gets the child's result again from the child's idempotency record (key
  ``"<parent id>:<step key>"``), without running the child again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .errors import DurableUsageError
from .results import ConcurrentExecution, Err, Result, RunnerError, UnexpectedError
from .state import RunOptions

RETRY_EVERY = 0.1  # seconds between tries while a crashed child's lease runs out
_THE_PARENT_S = ("store", "prefix", "clock", "id", "deps")


@dataclass(frozen=True)
class Child:
    """A child run as ``durable.run`` takes it."""

    workflow: Callable[..., Any]
    id: str
    deps: Any
    options: dict[str, Any] = field(default_factory=dict)
    patience: float = 60.0  # the child's lease time: how long a crashed holder may keep it

    def busy(self, result: Result[Any, Any]) -> bool:
        """The child's lease is held by another process (a crashed parent's, running out)."""
        error = result.error if isinstance(result, Err) else None
        return isinstance(error, ConcurrentExecution) and error.reason == "cross-process"


class ChildNotRun(Exception):
    """The child could not run (a runner error of its own): the parent's step ends the
    parent with that error, and records nothing (a later run tries the child again)."""

    def __init__(self, result: Err[Any]) -> None:
        super().__init__(getattr(result.error, "message", repr(result.error)))
        self.result = result


def child_of(
    parent: RunOptions,
    workflow: Callable[..., Any],
    key: str,
    child_id: str | None,
    deps: Any,
    options: Mapping[str, Any],
) -> Child:
    """The child run of step ``key`` of ``parent``; ``options`` are ``durable.run``'s."""
    if not callable(workflow):
        raise DurableUsageError(f"step.workflow: {workflow!r} is not a workflow function")
    taken = sorted(set(options) & set(_THE_PARENT_S))
    if taken:
        raise DurableUsageError(
            f"step.workflow: {taken} come from the parent run (give the child's id as id=)"
        )
    if child_id is None:
        child_id = f"{parent.workflow_id}:{key}"
    if not isinstance(child_id, str) or not child_id or child_id == parent.workflow_id:
        raise DurableUsageError(
            f"step.workflow: the child's id must be a non-empty str other than the "
            f"parent's, got {child_id!r}"
        )
    given = {
        "store": parent.store,
        "prefix": parent.store_prefix,
        "lock_prefix": parent.lock_prefix,
        "clock": parent.clock,
        "idempotency_key": f"{parent.workflow_id}:{key}",
        "retention": parent.retention,
        "stop": parent.stop,  # a shutdown stops the whole tree; a cancellation does not
        **options,
    }
    lease = given.get("lease_ttl", parent.lease_ttl)
    patience = lease.total_seconds() if isinstance(lease, timedelta) else float(lease)
    return Child(workflow, child_id, deps, given, patience)


def outcome_of(result: Result[Any, Any]) -> Result[Any, Any]:
    """The child's result as the step's: its value or its failure (an exception the
    child raised is raised again); a runner error of the child's is not the child's
    failure (:class:`ChildNotRun`)."""
    if not isinstance(result, Err):
        return result
    if isinstance(result.error, RunnerError):
        raise ChildNotRun(result)
    if isinstance(result.error, UnexpectedError) and isinstance(result.cause, Exception):
        raise result.cause  # the child raised: so did this step
    return result


def run_child(child: Child) -> Result[Any, Any]:
    """Run the child (sync), waiting while a crashed process's lease on it runs out."""
    from .api import run  # the entry point builds on this module's users

    clock = child.options["clock"]
    deadline = clock.time() + child.patience + RETRY_EVERY
    while True:
        result = run(child.deps, child.workflow, id=child.id, **child.options)
        if not child.busy(result) or clock.time() >= deadline:
            return outcome_of(result)
        clock.sleep(RETRY_EVERY)


async def run_child_async(child: Child) -> Result[Any, Any]:
    """:func:`run_child` for an asyncio parent: the child is a ``run_async``."""
    from .api import run_async

    clock = child.options["clock"]
    deadline = clock.time() + child.patience + RETRY_EVERY
    while True:
        result = await run_async(child.deps, child.workflow, id=child.id, **child.options)
        if not child.busy(result) or clock.time() >= deadline:
            return outcome_of(result)
        await clock.asleep(RETRY_EVERY)
