"""A run's options, and its state while it runs: outcomes, lease, waits, events."""

from __future__ import annotations

import inspect
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from ..wire.documents import (
    STEP_MS,
    EncodedSteps,
    SnapshotWriter,
    idempotency_key_of,
)
from .cancel import CANCELLED, CancelToken, cancelled_mark
from .clock import SYSTEM_CLOCK, Clock
from .compensation import COMPENSATION, Compensation, Undo, compensation_of
from .errors import DurableUsageError
from .groups import GROUPS, groups_of
from .requests import Renew
from .results import (
    Result,
)
from .stopping import StopToken
from .waits import REGISTERED, TRACEPARENT, WAITS, waits_of

if TYPE_CHECKING:
    from .tracing import RunTrace

log = logging.getLogger("sqlalchemy_awaitly.durable")
_HOST = socket.gethostname()


# --- a run's options and state ------------------------------------------------


@dataclass(frozen=True)
class VersionMismatchInfo:
    """What ``on_version_mismatch`` is asked about."""

    workflow_id: str
    stored_version: int | float
    requested_version: int | float


@dataclass(frozen=True)
class Migrated:
    """``on_version_mismatch`` may return this: resume from ``snapshot`` instead."""

    snapshot: dict[str, Any]


@dataclass(frozen=True)
class DurableEvent:
    """What ``on_event`` receives: step and persistence events of one run."""

    type: Literal[
        "step_start",
        "step_success",
        "step_error",
        "step_skipped",
        "step_retry",
        "step_retries_exhausted",
        "step_timeout",
        "persist_success",
        "persist_error",
    ]
    workflow_id: str
    step_key: str
    at: datetime
    error: BaseException | None = None
    step_name: str = ""
    """The step's ``name=``, else its key."""
    attempt: int | None = None
    """``step_retry``: the attempt about to start; ``step_retries_exhausted``: attempts made."""
    max_attempts: int | None = None
    delay: float | None = None
    """``step_retry``: the seconds waited before the attempt."""
    failure: Any = None
    """Retry events: the failed attempt's error (the exception, or the ``Err``'s error)."""
    timeout: float | None = None
    """``step_timeout``: the limit, in seconds, the attempt ran past."""


@dataclass(frozen=True)
class RunOptions:
    workflow_id: str
    prefix: str
    lock_prefix: str
    guard_scope: object
    deps: Any = None
    version: int | float = 1
    metadata: dict[str, Any] = field(default_factory=dict)
    on_version_mismatch: Callable[[VersionMismatchInfo], Any] | None = None
    allow_concurrent: bool = False
    lease_ttl: float = 60.0
    heartbeat_interval: float = 20.0
    idempotency_key: str | None = None
    input: Any = None
    retention: float | None = None
    on_event: Callable[[DurableEvent], Any] | None = None
    clock: Clock = SYSTEM_CLOCK
    # ``run``'s own ``store`` and ``prefix`` arguments: a child run gets the same.
    store: object = None
    store_prefix: str | None = None
    cancel: CancelToken | None = None
    stop: StopToken | None = None
    # What a run started through a Registry records from its first write, so that
    # recovery finds it and knows what to call: {"type", "version", "input"}.
    registered: dict[str, Any] | None = None
    # Recovery's runs: a missing row means the run ended elsewhere, not a new run.
    resume_only: bool = False
    # The workflow function's name: a run span's name when the run has no registered type.
    workflow_name: str = "workflow"

    @property
    def state_key(self) -> str:
        return self.prefix + self.workflow_id

    @property
    def idempotency_row(self) -> str:
        assert self.idempotency_key is not None
        return idempotency_key_of(self.prefix, self.idempotency_key)


@dataclass
class Lease:
    """A held lease. The heartbeat reports each renewal; the lease is lost when a
    renewal is refused (another owner, or it expired), or when none has
    succeeded for a whole lease time (the database was unreachable)."""

    key: str
    value: str
    ttl: float
    interval: float
    lost: bool = False
    last_renewed: float = field(default_factory=time.monotonic)
    # Another process asked this run to stop (``durable.cancel``), marking the lease
    # row: the marked value is the lease's now, and the run ends before its next step.
    cancel_requested: bool = False
    cancel_reason: str | None = None

    def adopt(self, marked: str, reason: str | None) -> None:
        """The lease row was marked for cancellation: it is still ours, under ``marked``."""
        self.value = marked
        self.cancel_reason = reason
        self.cancel_requested = True

    def renewed(self, answer: bool | None) -> None:
        """``answer``: the renewal's result, or None if it raised."""
        now = time.monotonic()
        if answer:
            self.last_renewed = now
        elif answer is False or now - self.last_renewed >= self.ttl:
            self.lost = True

    def gone(self) -> bool:
        """Lost, or not renewed for a whole lease time (a renewal may be hanging)."""
        if not self.lost and time.monotonic() - self.last_renewed >= self.ttl:
            self.lost = True
        return self.lost

    @property
    def guard(self) -> tuple[str, str]:
        return (self.key, self.value)

    @property
    def renewal(self) -> Renew:
        return Renew(self.key, self.value, self.ttl)


@dataclass
class BodyOutcome:
    value: Any = None
    exit: Result[Any, Any] | None = None
    raised: Exception | None = None


class StepExit(BaseException):
    """Ends the workflow body at a failed step; a BaseException so ``except Exception``
    in the workflow cannot swallow it (if it is swallowed anyway, the run still ends)."""

    def __init__(self, result: Result[Any, Any]) -> None:
        super().__init__(result)
        self.result = result


def this_process() -> str:
    """Who holds a lease taken here, for operators: host and pid (read at each lease,
    so a forked worker names itself)."""
    return f"{_HOST} pid {os.getpid()}"


class RunState:
    """One run in progress: the outcomes so far, and why it must stop, if it must."""

    def __init__(self, options: RunOptions, lease: Lease | None) -> None:
        self.options = options
        self.lease = lease
        self.steps: dict[str, Any] = {}
        self.encoded = EncodedSteps()
        self.texts = SnapshotWriter(options.workflow_id, self.encoded)
        self._metadata: dict[str, Any] | None = None  # while no wait is recorded
        self.stored: set[str] = set()
        self.seen: set[str] = set()
        self.stored_metadata: dict[str, Any] = {}
        self.has_row = False
        # Steps waiting (a sleep, a retry's backoff) as the row records them, so a
        # run resumed after a crash waits only the rest, on the same attempt count.
        self.waits: dict[str, dict[str, int]] = {}
        # Members of keyed groups in progress that have finished, as the row records
        # them, so a run resumed after a crash runs only the others.
        self.groups: dict[str, dict[str, Any]] = {}
        # Compensations of the steps completed (run or replayed), in step order, and
        # the record of the compensation once the run failed (``saga.py``).
        self.compensations: dict[str, Undo] = {}
        self.compensation: Compensation | None = None
        self.replayed_failure = False  # the run fails at a failure read from the row
        self.last_key: str | None = None  # of the last snapshot built
        self.last_done: str | None = None  # the last step completed (run or replayed)
        self.cancelled: dict[str, Any] | None = None  # the row's mark, once cancelled
        self.stored_registered: dict[str, Any] | None = None  # kept by a plain resume
        self.released = False  # the lease went with the run's row, in one statement
        # The newest snapshot text written (or loaded): a lost reply is resolved against it.
        self.saved_text: str | None = None
        self.saved_seq = 0
        self.stop: Result[Any, Any] | None = None
        self.usage_error: DurableUsageError | None = None
        self._seq = 0
        # Spans and metrics of this run (``tracing.py``), None when no SDK is set up;
        # the traceparent of the run that wrote the row, for the resumed run's link.
        self.trace: RunTrace | None = None
        self.resumed_traceparent: object = None

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def guard(self) -> tuple[str, str] | None:
        return None if self.lease is None else self.lease.guard

    def record(self, key: str, outcome: dict[str, Any], ms: int | None = None) -> None:
        """Step ``key``'s outcome, and the milliseconds it took (None: not timed)."""
        self.steps[key] = outcome
        self.encoded.put(key, outcome, ms)

    def forget(self, key: str) -> None:
        del self.steps[key]
        self.encoded.drop(key)

    def resume_from(self, snapshot: dict[str, Any]) -> None:
        self.steps = dict(snapshot["steps"])
        metadata = snapshot.get("metadata") or {}
        durations = metadata.get(STEP_MS)
        if not isinstance(durations, list) or len(durations) != len(self.steps):
            durations = []  # not ours, or stale (awaitly ran steps since): not aligned
        for n, (key, outcome) in enumerate(self.steps.items()):
            self.encoded.put(key, outcome, durations[n] if n < len(durations) else None)
        self.stored = set(self.steps)
        self.stored_metadata = dict(snapshot.get("metadata") or {})
        self._metadata = None
        self.waits = waits_of(self.stored_metadata, self.stored)
        self.groups = groups_of(self.stored_metadata, self.stored)
        self.compensation = compensation_of(self.stored_metadata)
        self.cancelled = cancelled_mark(self.stored_metadata)
        section = self.stored_metadata.get(WAITS)
        kept = section.get(REGISTERED) if isinstance(section, dict) else None
        self.stored_registered = kept if isinstance(kept, dict) else None
        self.resumed_traceparent = section.get(TRACEPARENT) if isinstance(section, dict) else None
        last = self.stored_metadata.get("lastStepKey")
        self.last_key = last if isinstance(last, str) else None
        self.has_row = True

    def metadata(self) -> dict[str, Any]:
        """Stored keys kept, the run's own merged over them, ``version`` always the run's,
        and this runner's records (under :data:`WAITS`, which awaitly carries through):
        waits and finished members of groups in progress, a compensation, a
        cancellation, and a registered run's type and input.

        Not to be changed: while nothing in it changes from step to step it is the same
        dict every time (so its JSON is encoded once, :class:`SnapshotWriter`)."""
        changing = bool(self.waits or self.groups or self.compensation or self.cancelled)
        if not changing and self._metadata is not None:
            return self._metadata
        o = self.options
        merged = {**self.stored_metadata, **o.metadata, "version": o.version}
        for rewritten in (WAITS, STEP_MS, "lastStepKey"):  # the last two by the writer
            merged.pop(rewritten, None)
        section: dict[str, Any] = {}
        if self.waits:
            section["waits"] = dict(self.waits)
        if self.groups:
            section[GROUPS] = {key: dict(members) for key, members in self.groups.items()}
        if self.compensation is not None:
            section[COMPENSATION] = self.compensation.as_json()
        if self.cancelled is not None:
            section[CANCELLED] = dict(self.cancelled)
        registered = o.registered if o.registered is not None else self.stored_registered
        if registered is not None:
            section[REGISTERED] = dict(registered)
        traceparent = None if self.trace is None else self.trace.traceparent
        if traceparent is not None:
            section[TRACEPARENT] = traceparent
        if section:
            merged[WAITS] = section
        if not changing:
            self._metadata = merged
        return merged

    def snapshot_text(self, last_step_key: str | None) -> str:
        """The snapshot to save after ``last_step_key``'s outcome (or wait) is recorded
        (None: before any step)."""
        self.last_key = last_step_key
        return self.texts.text(last_step_key, self.metadata())

    def emit(
        self,
        type_: Any,
        key: str,
        error: BaseException | None = None,
        step_name: str = "",
        **more: Any,
    ) -> None:
        hook = self.options.on_event
        if hook is None:
            return
        name = step_name or key
        try:
            at = _utcnow()
            event = DurableEvent(type_, self.options.workflow_id, key, at, error, name, **more)
            answer = hook(event)
        except Exception:
            log.exception("on_event hook failed; the run goes on")
            return
        if inspect.iscoroutine(answer):
            answer.close()
            log.warning("on_event is called synchronously: an async hook is not awaited")

    def end(self, result: Result[Any, Any]) -> StepExit:
        if self.stop is None:
            self.stop = result
        return StepExit(self.stop)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)
