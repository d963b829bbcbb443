"""How a run behaves, written once for the sync and the asyncio runner.

Each plan is a generator: it yields an I/O request (load this key, save that
text, call the step function, begin a transaction...) and receives the
answer, or the exception, from a driver (``drivers.py``) that performs it
with blocking calls or with ``await``. Every decision (what to skip, what to
record, which error to return) lives here, so both flavours behave alike.
"""

from __future__ import annotations

import inspect
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, TypeVar

from ..errors import CorruptStateError, InvalidInputError, OutcomeUnknownError
from ..wire import json_text
from ..wire.documents import (
    EncodedSteps,
    decode_state,
    idempotency_key_of,
    idempotency_record,
    lease_value,
    read_idempotency,
    same_input,
    to_json,
    version_of,
    workflow_snapshot,
)
from .clock import SYSTEM_CLOCK, Clock
from .errors import DuplicateStepKeyError, DurableUsageError
from .results import (
    ConcurrentExecution,
    CorruptState,
    Err,
    IdempotencyConflict,
    LeaseExpired,
    Ok,
    PersistenceFailed,
    Result,
    UnexpectedError,
    VersionMismatch,
)
from .retry import Retry
from .timeout import TimedOut, Timeout, TimeoutInfo
from .values import (
    check_json,
    nothing_outcome,
    raised_failure,
    replay,
    returned_failure,
    success_outcome,
    text_of,
    timeout_failure,
)
from .waits import WAITS, waits_of

T = TypeVar("T")
log = logging.getLogger("sqlalchemy_awaitly.durable")


# --- I/O requests -----------------------------------------------------------


@dataclass(frozen=True)
class Load:
    key: str


@dataclass(frozen=True)
class Save:
    """Upsert ``key``. With ``guard`` (a lease's key and value), only while the lease
    holds: the answer is False if it was lost. ``seq`` orders snapshots of one run:
    a snapshot older than one already saved is not written over it."""

    key: str
    text: str
    ttl: float | None = None
    tx: Any = None  # a transaction from Begin: the save joins it
    guard: tuple[str, str] | None = None
    seq: int | None = None


@dataclass(frozen=True)
class Delete:
    """Delete ``key``; with ``guard``, only while the lease holds, and with ``release``
    the lease row too, in the same statement (True: the lease held, both are gone)."""

    key: str
    guard: tuple[str, str] | None = None
    release: bool = False


@dataclass(frozen=True)
class Touch:
    key: str
    ttl: float | None


@dataclass(frozen=True)
class Acquire:
    """Insert ``key`` unless a live row holds it (a lease; an idempotency claim)."""

    key: str
    value: str
    ttl: float | None


@dataclass(frozen=True)
class Renew:
    """Extend a lease, only while it still holds its owner's value (the heartbeat)."""

    key: str
    value: str
    ttl: float


@dataclass(frozen=True)
class Release:
    key: str
    value: str


@dataclass(frozen=True)
class Keys:
    prefix: str


@dataclass(frozen=True)
class LoadMany:
    keys: list[str]


@dataclass(frozen=True)
class DeleteMany:
    keys: list[str]


@dataclass(frozen=True)
class Call:
    """Call user code (a step, a hook); the driver awaits it in the asyncio flavour."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    limit: Timeout | None = None  # a step's attempt: TimedOut past it


@dataclass(frozen=True)
class Pause:
    """Wait ``seconds`` on the run's clock: between a step's attempts, or ``step.sleep``."""

    seconds: float
    clock: Clock


@dataclass(frozen=True)
class Begin:
    """Open a transaction on the store's engine; ``session``: hand the step a Session."""

    session: bool


@dataclass(frozen=True)
class Flush:
    """Write a step's pending Session changes now, so their errors are the step's."""

    tx: Any


@dataclass(frozen=True)
class Finish:
    tx: Any
    commit: bool


@dataclass(frozen=True)
class RunBody:
    state: RunState


@dataclass(frozen=True)
class StartHeartbeat:
    state: RunState


@dataclass(frozen=True)
class StopHeartbeat:
    state: RunState


Request = (
    Load
    | Save
    | Delete
    | Touch
    | Acquire
    | Renew
    | Release
    | Keys
    | LoadMany
    | DeleteMany
    | Call
    | Pause
    | Begin
    | Flush
    | Finish
    | RunBody
    | StartHeartbeat
    | StopHeartbeat
)
Plan = Generator[Request, Any, T]


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


class RunState:
    """One run in progress: the outcomes so far, and why it must stop, if it must."""

    def __init__(self, options: RunOptions, lease: Lease | None) -> None:
        self.options = options
        self.lease = lease
        self.steps: dict[str, Any] = {}
        self.encoded = EncodedSteps()
        self.stored: set[str] = set()
        self.seen: set[str] = set()
        self.stored_metadata: dict[str, Any] = {}
        self.has_row = False
        # Steps waiting (a sleep, a retry's backoff) as the row records them, so a
        # run resumed after a crash waits only the rest, on the same attempt count.
        self.waits: dict[str, dict[str, int]] = {}
        self.released = False  # the lease went with the run's row, in one statement
        # The newest snapshot text written (or loaded): a lost reply is resolved against it.
        self.saved_text: str | None = None
        self.saved_seq = 0
        self.stop: Result[Any, Any] | None = None
        self.usage_error: DurableUsageError | None = None
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def guard(self) -> tuple[str, str] | None:
        return None if self.lease is None else self.lease.guard

    def record(self, key: str, outcome: dict[str, Any]) -> None:
        self.steps[key] = outcome
        self.encoded.put(key, outcome)

    def forget(self, key: str) -> None:
        del self.steps[key]
        self.encoded.drop(key)

    def resume_from(self, snapshot: dict[str, Any]) -> None:
        self.steps = dict(snapshot["steps"])
        for key, outcome in self.steps.items():
            self.encoded.put(key, outcome)
        self.stored = set(self.steps)
        self.stored_metadata = dict(snapshot.get("metadata") or {})
        self.waits = waits_of(self.stored_metadata, self.stored)
        self.has_row = True

    def metadata(self) -> dict[str, Any]:
        """Stored keys kept, the run's own merged over them, ``version`` always the run's,
        and the waits in progress (under :data:`WAITS`, which awaitly carries through)."""
        o = self.options
        merged = {**self.stored_metadata, **o.metadata, "version": o.version}
        if self.waits:
            merged[WAITS] = {"waits": dict(self.waits)}
        else:
            merged.pop(WAITS, None)
        return merged

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


# --- the in-process guard ---------------------------------------------------

_active: set[tuple[object, str]] = set()
_active_lock = threading.Lock()


def _claim(scope: tuple[object, str]) -> bool:
    with _active_lock:
        if scope in _active:
            return False
        _active.add(scope)
        return True


def _unclaim(scope: tuple[object, str]) -> None:
    with _active_lock:
        _active.discard(scope)


# --- the plans --------------------------------------------------------------


def run_plan(o: RunOptions) -> Plan[Result[Any, Any]]:
    """One call of ``run``: idempotency, guards, lease, load, the body, and the end."""
    marker: str | None = None
    claimed = False
    if o.idempotency_key is not None:
        marker = idempotency_record(
            o.workflow_id, o.idempotency_key, o.input, claim_token=uuid.uuid4().hex
        )
        try:
            text = yield Load(o.idempotency_row)
            if text is None:
                # Claim the key in one statement: of two callers, one wins.
                claimed = yield from acquire(o.idempotency_row, marker, o.retention)
                if not claimed:
                    text = yield Load(o.idempotency_row)
        except Exception as e:
            return Err(PersistenceFailed(o.workflow_id, "load", e, "the idempotency record"))
        if text is not None:
            answer = _idempotent_answer(o, text)
            if answer is not None:
                return answer
    scope = (o.guard_scope, o.workflow_id)
    if not o.allow_concurrent and not _claim(scope):
        result: Result[Any, Any] = Err(ConcurrentExecution(o.workflow_id, "in-process"))
    else:
        try:
            result = yield from _leased(o, marker if not claimed else None)
        finally:
            if not o.allow_concurrent:
                _unclaim(scope)
    if marker is not None and isinstance(result, Err):
        busy = isinstance(result.error, ConcurrentExecution)
        if claimed or not busy:  # free the key; a running holder keeps its own
            try:
                yield from repeated_if_unknown(Delete(o.idempotency_row))
            except Exception:
                log.warning("could not free idempotency key %r", o.idempotency_key)
    return result


def _idempotent_answer(o: RunOptions, text: str) -> Result[Any, Any] | None:
    """The answer an earlier run with this idempotency key already gives, if any."""
    key = o.idempotency_row
    try:
        record = read_idempotency(key, text)
    except CorruptStateError as e:
        return Err(CorruptState(o.workflow_id, key, e.reason))
    assert o.idempotency_key is not None
    if record.input is not None and o.input is not None and not same_input(record.input, o.input):
        return Err(IdempotencyConflict(o.workflow_id, o.idempotency_key))
    if record.completed and record.final is not None:
        value = json_text.copy_of(record.final.get("value"))
        return Ok(value) if record.final.get("ok") else Err(record.final.get("error"))
    if record.workflow_id != o.workflow_id:
        return Err(ConcurrentExecution(str(record.workflow_id), "cross-process", o.idempotency_key))
    return None  # ours, or a crashed run under this id to resume: the lease decides


def _leased(o: RunOptions, remark: str | None) -> Plan[Result[Any, Any]]:
    """Take the lease (and renew it from now on), then run; ``remark``: a marker to rewrite."""
    lease = None
    if not o.allow_concurrent:
        lease = Lease(
            o.lock_prefix + o.workflow_id,
            lease_value(uuid.uuid4().hex),
            o.lease_ttl,
            o.heartbeat_interval,
        )
        try:
            acquired = yield from acquire(lease.key, lease.value, lease.ttl)
        except Exception as e:
            return Err(PersistenceFailed(o.workflow_id, "load", e, "the lease"))
        if not acquired:
            return Err(ConcurrentExecution(o.workflow_id, "cross-process"))
    state = RunState(o, lease)
    try:
        if lease is not None:
            yield StartHeartbeat(state)
        try:
            if remark is not None:  # a crashed run of this key: its marker is ours now
                try:
                    yield Save(o.idempotency_row, remark, o.retention)
                except Exception as e:
                    return Err(
                        PersistenceFailed(o.workflow_id, "save", e, "the idempotency record")
                    )
            return (yield from _loaded(o, state))
        finally:
            if lease is not None:
                yield StopHeartbeat(state)
    finally:
        if lease is not None and not state.released:
            try:
                yield from repeated_if_unknown(Release(lease.key, lease.value))
            except Exception:
                log.warning("could not release the lease of %r; it expires", o.workflow_id)


def _loaded(o: RunOptions, state: RunState) -> Plan[Result[Any, Any]]:
    try:
        text = yield Load(o.state_key)
    except Exception as e:
        return Err(PersistenceFailed(o.workflow_id, "load", e))
    if text is not None:
        state.saved_text = text
        try:
            snapshot: dict[str, Any] | None = decode_state(o.state_key, text)
        except CorruptStateError as e:
            return Err(CorruptState(o.workflow_id, o.state_key, e.reason))
        assert snapshot is not None
        stored_version = version_of(snapshot)
        if stored_version != o.version:
            answer: Any = "throw"
            if o.on_version_mismatch is not None:
                info = VersionMismatchInfo(o.workflow_id, stored_version, o.version)
                answer = yield Call(o.on_version_mismatch, (info,))
            if answer == "clear":
                try:
                    yield from repeated_if_unknown(Delete(o.state_key))
                except Exception as e:
                    return Err(PersistenceFailed(o.workflow_id, "delete", e))
                snapshot = None
            elif isinstance(answer, Migrated):
                try:
                    snapshot = decode_state(o.state_key, to_json(answer.snapshot))
                except (CorruptStateError, TypeError, ValueError) as e:
                    reason = getattr(e, "reason", str(e))
                    return Err(CorruptState(o.workflow_id, o.state_key, f"migrated: {reason}"))
            elif answer == "throw":
                return Err(VersionMismatch(o.workflow_id, stored_version, o.version))
            else:
                raise DurableUsageError(
                    f"on_version_mismatch returned {answer!r}; "
                    "expected 'throw', 'clear' or Migrated(snapshot)"
                )
        if snapshot is not None:
            state.resume_from(snapshot)
    body = yield RunBody(state)
    if state.usage_error is not None:
        raise state.usage_error
    return (yield from _ended(o, state, _result_of(state, body)))


def _result_of(state: RunState, body: BodyOutcome) -> Result[Any, Any]:
    if state.stop is not None:
        return state.stop
    if body.exit is not None:
        return body.exit
    if body.raised is not None:
        e = body.raised
        return Err(UnexpectedError(f"{type(e).__name__}: {text_of(e)}"), e)
    if isinstance(body.value, (Ok, Err)):
        return body.value
    return Ok(body.value)


def _ended(o: RunOptions, state: RunState, result: Result[Any, Any]) -> Plan[Result[Any, Any]]:
    lease_lost = Err(LeaseExpired(o.workflow_id))  # the row stays: another owner may run it
    if state.lease is not None and state.lease.gone():
        return lease_lost
    if isinstance(result, Ok):
        if o.idempotency_key is not None:
            check_json(result.value, "the workflow's return value (kept for its idempotency key)")
        try:
            if state.guard is None:
                yield from repeated_if_unknown(Delete(o.state_key))
            else:
                # The lease goes in the same statement, unless an idempotency record
                # is still to be completed: until it is, the lease keeps a second
                # caller with the same key from running the workflow again.
                release = o.idempotency_key is None
                deleted = yield from delete_guarded(
                    o.state_key, state.guard, state.saved_text, release
                )
                state.released = release and deleted
                if state.has_row and not deleted:
                    return lease_lost
        except Exception as e:
            return Err(PersistenceFailed(o.workflow_id, "delete", e))
        if o.idempotency_key is not None:
            done = idempotency_record(
                o.workflow_id, o.idempotency_key, o.input, result.value, completed=True
            )
            try:
                yield Save(o.idempotency_row, done, o.retention)
            except Exception:
                log.exception("could not record the result of key %r", o.idempotency_key)
        return result
    if o.retention is not None and state.has_row:
        try:
            yield Touch(o.state_key, o.retention)
        except Exception:
            log.warning("could not set the retention of failed run %r", o.workflow_id)
    return result


UNSET: Any = object()  # an option not given (None is a value an error may be)


@dataclass(frozen=True)
class ErrorMap:
    """How ``step.try_``, ``from_result`` and ``from_nullable`` type a failure: as
    ``error``, or as ``on_error(what failed)`` (``on_error()`` for a None)."""

    kind: Literal["try", "result", "nullable"]
    error: Any = UNSET
    on_error: Callable[..., Any] | None = None


@dataclass(slots=True)
class StepSpec:
    """One step as the workflow asked for it.

    ``session`` None: a plain step. Else a transactional one, handed a
    Connection (False) or Session (True) whose transaction also writes the
    checkpoint, so its database writes and its record commit together.
    ``pause``: a ``step.sleep``, which waits that many seconds instead of calling.
    """

    key: str
    fn: Callable[..., Any] | None
    session: bool | None = None
    name: str | None = None
    retry: Retry | int | None = None
    pause: float | timedelta | None = None
    errors: ErrorMap | None = None
    timeout: Timeout | float | timedelta | None = None

    @property
    def label(self) -> str:
        return self.name or self.key

    def checked(self) -> StepSpec:
        """This step with its options checked: ``retry=3`` is ``Retry(3)``, a pause in
        seconds; what is wrong raises (the caller makes it the run's usage error)."""
        plain = self.retry is None and self.pause is None and self.name is None
        plain = plain and self.errors is None and self.timeout is None
        if plain and type(self.key) is str and self.key:
            return self  # a plain step, as most are
        if not isinstance(self.key, str) or not self.key:
            raise DurableUsageError(f"a step key must be a non-empty str, got {self.key!r}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise DurableUsageError(f"a step name must be a non-empty str, got {self.name!r}")
        errors = self.errors
        if errors is not None and (errors.error is UNSET) == (errors.on_error is None):
            raise DurableUsageError(
                f"step {self.key!r}: give error= or on_error= (one of them) for the typed error"
            )
        if errors is not None and errors.on_error is not None and not callable(errors.on_error):
            raise DurableUsageError(f"step {self.key!r}: on_error must be callable")
        retry = self.retry
        try:
            if isinstance(retry, int) and not isinstance(retry, bool):
                retry = Retry(retry)
            elif retry is not None and not isinstance(retry, Retry):
                raise TypeError(f"retry must be a Retry or an int, got {type(retry).__name__}")
            pause = None if self.pause is None else _pause_seconds(self.pause)
            timeout = self.timeout
            if timeout is not None and not isinstance(timeout, Timeout):
                timeout = Timeout(timeout)
        except (TypeError, ValueError) as e:
            raise DurableUsageError(f"step {self.key!r}: {e}") from e
        if retry is self.retry and pause is None and timeout is self.timeout:
            return self  # nothing to convert
        return replace(self, retry=retry, pause=pause, timeout=timeout)


def _pause_seconds(value: object) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"a sleep is seconds or a timedelta, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidInputError(f"a sleep must be finite and not negative, got {value!r}")
    return float(seconds)


def step_plan(state: RunState, spec: StepSpec) -> Plan[Any]:
    """One step: replay it if stored, else run it and record its outcome."""
    o = state.options
    try:
        spec = spec.checked()
    except DurableUsageError as e:
        raise _usage(state, e) from None
    key = spec.key
    if key in state.seen:
        raise _usage(
            state,
            DuplicateStepKeyError(
                f"step key {key!r} is used twice in workflow {o.workflow_id!r}: "
                "every step needs its own key"
            ),
        )
    state.seen.add(key)
    if state.usage_error is not None:  # swallowed by the workflow: it still ends the run
        raise state.usage_error
    if state.stop is not None:
        raise StepExit(state.stop)
    if state.lease is not None and state.lease.gone():
        raise state.end(Err(LeaseExpired(o.workflow_id)))
    name = spec.label
    if key in state.stored:
        state.emit("step_skipped", key, step_name=name)
        answer = replay(state.steps[key])
        if isinstance(answer, Err):
            raise state.end(answer)
        return json_text.copy_of(answer)
    recorded = False
    try:
        result = yield from _run_and_record(state, spec)
        recorded = True
    finally:
        if not recorded:  # interrupted before its record: the step may be run again
            state.seen.discard(key)
    state.has_row = True
    state.emit("persist_success", key, step_name=name)
    if isinstance(result, Err):
        cause = result.cause if isinstance(result.cause, Exception) else None
        state.emit("step_error", key, cause, step_name=name)
        raise state.end(result)
    state.emit("step_success", key, step_name=name)
    return result.value


_NOTHING = object()  # what a sleep "returns": stored as awaitly's ok(undefined)


def _run_and_record(state: RunState, spec: StepSpec) -> Plan[Result[Any, Any]]:
    o = state.options
    key, name = spec.key, spec.label
    state.emit("step_start", key, step_name=name)
    tx = None
    if spec.session is not None:
        try:
            tx = yield Begin(spec.session)
        except DurableUsageError as e:
            raise _usage(state, e) from None
        except Exception as e:
            state.emit("persist_error", key, e, step_name=name)
            raise state.end(Err(PersistenceFailed(o.workflow_id, "save", e))) from None
    try:
        try:
            if spec.pause is not None:
                assert isinstance(spec.pause, float)  # checked() made it seconds
                yield from _wait(state, spec, spec.pause)
                raw: Any = _NOTHING
            else:
                assert spec.fn is not None
                args = () if tx is None else (tx.resource,)
                if spec.retry is None and spec.errors is None and spec.timeout is None:
                    raw = yield Call(spec.fn, args)
                else:
                    raw = yield from _attempts(state, spec, args)
            if tx is not None and not isinstance(raw, Err):
                yield Flush(tx)
        except DurableUsageError as e:
            raise _usage(state, e) from None
        except Exception as e:
            failed: Result[Any, Any] = Err(UnexpectedError(f"{type(e).__name__}: {text_of(e)}"), e)
            outcome, result = raised_failure(e), failed
        else:
            outcome, result = _outcome_of(state, key, raw)
        state.waits.pop(key, None)  # ended: its checkpoint forgets the wait
        state.record(key, outcome)
        text = workflow_snapshot(o.workflow_id, state.encoded, key, state.metadata())
        seq = state.next_seq()
        try:
            if tx is not None and result.ok:
                saved = yield Save(o.state_key, text, None, tx, state.guard, seq)
                if saved is not False:
                    tx, done = None, tx
                    yield from commit(done, o.state_key, text)
            else:
                if tx is not None:
                    tx, done = None, tx
                    try:
                        yield Finish(done, False)
                    except Exception:  # closing the connection rolls back anyway
                        log.warning("rollback of step %r failed", key, exc_info=True)
                saved = yield Save(o.state_key, text, None, None, state.guard, seq)
        except Exception as e:
            state.forget(key)
            state.emit("persist_error", key, e, step_name=name)
            raise state.end(Err(PersistenceFailed(o.workflow_id, "save", e))) from None
        if saved is not False and seq > state.saved_seq:
            state.saved_text, state.saved_seq = text, seq
        if saved is False:  # the lease changed hands: this owner may write no more
            state.forget(key)
            assert state.lease is not None
            state.lease.lost = True
            raise state.end(Err(LeaseExpired(o.workflow_id)))
    finally:
        if tx is not None:  # rolled back: raised past us, or the lease was lost
            yield Finish(tx, False)
    return result


def _attempts(state: RunState, spec: StepSpec, args: tuple[Any, ...]) -> Plan[Any]:
    """Call the step's function, again after a failure while its retry policy allows;
    the last attempt's answer, or its exception. Only that outcome is recorded.

    Each attempt's outcome is typed first (``step.try_`` and its kin), as awaitly
    does, so ``should_retry`` sees the typed error.
    """
    assert spec.fn is not None
    errors = spec.errors
    limit = spec.timeout
    assert limit is None or isinstance(limit, Timeout)  # checked() made it one
    attempt = 1
    waiting = state.waits.get(spec.key)
    if isinstance(spec.retry, Retry) and waiting is not None and "attempt" in waiting:
        # Resumed in a retry's backoff: the budget goes on, after the rest of the wait.
        attempt = min(waiting["attempt"], spec.retry.attempts - 1) + 1
        yield Pause(_remaining(state, waiting), state.options.clock)
    while True:
        exc: Exception | None = None
        timed_out = False
        try:
            raw = yield Call(spec.fn, args, limit)
        except DurableUsageError:
            raise
        except TimedOut:
            assert limit is not None
            if limit.on_timeout == "option":
                yield from _timed_out(state, spec, limit, attempt)
                return _NOTHING  # awaitly: succeeds with no value, never retried
            failure = yield from _timed_out(state, spec, limit, attempt)
            raw, timed_out = Err(failure, failure), True
        except Exception as e:
            if errors is None or errors.kind != "try":
                exc, raw = e, None
            else:
                raw = Err((yield from _typed_error(errors, e)), e)
                if spec.retry is None:  # awaitly: a throw it caught, unless it retries
                    return Thrown(raw)
        else:
            if errors is not None:
                raw = yield from _typed(errors, raw)
            if not isinstance(raw, Err):
                return raw
        failure = exc if exc is not None else raw.error
        if not (yield from _retrying(state, spec, attempt, failure, exc)):
            if exc is not None:
                raise exc
            return Thrown(raw, timed_out=True) if timed_out else raw
        attempt += 1
        if state.lease is not None and state.lease.gone():  # lost while waiting
            raise state.end(Err(LeaseExpired(state.options.workflow_id)))


@dataclass(frozen=True)
class Thrown:
    """A failure awaitly records as thrown (``origin`` ``throw``): the typed error
    ``step.try_`` made of an exception, or a timeout's failure."""

    err: Err[Any]
    timed_out: bool = False


def _wait(
    state: RunState, spec: StepSpec, seconds: float, attempt: int | None = None
) -> Plan[None]:
    """Wait ``seconds`` (a sleep; the backoff after failed ``attempt``), recording first
    when it ends; a sleep resumed after a crash waits only what was left of it."""
    clock = state.options.clock
    waiting = state.waits.get(spec.key)
    if attempt is None and waiting is not None and "attempt" not in waiting:
        yield Pause(_remaining(state, waiting), clock)
        return
    until = math.ceil((clock.time() + seconds) * 1000)
    record = {"until": until} if attempt is None else {"attempt": attempt, "until": until}
    yield from _remember(state, spec, record)
    yield Pause(seconds, clock)


def _remaining(state: RunState, waiting: dict[str, int]) -> float:
    return max(0.0, waiting["until"] / 1000 - state.options.clock.time())


def _remember(state: RunState, spec: StepSpec, record: dict[str, int]) -> Plan[None]:
    """Save the snapshot with ``record`` as the step's wait, under the lease, as a
    checkpoint is saved: a lost lease or a failed save ends the run."""
    o = state.options
    state.waits[spec.key] = record
    text = workflow_snapshot(o.workflow_id, state.encoded, spec.key, state.metadata())
    seq = state.next_seq()
    try:
        saved = yield Save(o.state_key, text, None, None, state.guard, seq)
    except Exception as e:
        state.emit("persist_error", spec.key, e, step_name=spec.label)
        raise state.end(Err(PersistenceFailed(o.workflow_id, "save", e))) from None
    if saved is False:
        assert state.lease is not None
        state.lease.lost = True
        raise state.end(Err(LeaseExpired(o.workflow_id)))
    if seq > state.saved_seq:
        state.saved_text, state.saved_seq = text, seq
    state.has_row = True


def _timed_out(state: RunState, spec: StepSpec, limit: Timeout, attempt: int) -> Plan[Any]:
    """An attempt ran past ``limit``: the ``step_timeout`` event, and the failure value."""
    name = spec.label
    state.emit("step_timeout", spec.key, step_name=name, attempt=attempt, timeout=limit.limit)
    if limit.on_timeout == "option":
        return None
    if callable(limit.on_timeout):
        info = TimeoutInfo(name, spec.key, limit.limit, attempt)
        return (yield Call(limit.on_timeout, (info,)))
    return limit.failure(name, spec.key, attempt)


def _typed_error(errors: ErrorMap, failed: Any) -> Plan[Any]:
    if errors.on_error is None:
        return errors.error
    args = () if errors.kind == "nullable" else (failed,)
    return (yield Call(errors.on_error, args))


def _typed(errors: ErrorMap, raw: Any) -> Plan[Any]:
    """A returned value, as ``from_result`` (an ``Err`` typed) or ``from_nullable``
    (None typed) makes it; ``try_`` keeps it as it is."""
    if errors.kind == "result":
        if isinstance(raw, Err):
            return Err((yield from _typed_error(errors, raw.error)), raw.error)
        if not isinstance(raw, Ok):
            raise DurableUsageError(
                f"from_result needs a function that returns Ok or Err, got {type(raw).__name__}"
            )
        return raw
    if errors.kind == "nullable" and (raw is None or (isinstance(raw, Ok) and raw.value is None)):
        return Err((yield from _typed_error(errors, None)))
    return raw


def _retrying(
    state: RunState, spec: StepSpec, attempt: int, failure: Any, exc: Exception | None
) -> Plan[bool]:
    """After failed ``attempt``: wait and say True if another is due (awaitly's order:
    ``should_retry``, the ``step_retry`` event, ``on_retry``, the wait)."""
    retry = spec.retry
    if retry is None:
        return False
    assert isinstance(retry, Retry)  # checked() made it one
    name = spec.label
    if attempt < retry.attempts and (
        retry.should_retry is None or bool((yield Call(retry.should_retry, (failure, attempt))))
    ):
        delay = retry.delay(attempt, state.options.clock.random())
        state.emit(
            "step_retry",
            spec.key,
            exc,
            step_name=name,
            attempt=attempt + 1,
            max_attempts=retry.attempts,
            delay=delay,
            failure=failure,
        )
        if retry.on_retry is not None:
            yield Call(retry.on_retry, (failure, attempt, delay))
        yield from _wait(state, spec, delay, attempt)
        return True
    if retry.attempts > 1:
        state.emit(
            "step_retries_exhausted",
            spec.key,
            exc,
            step_name=name,
            attempt=attempt,
            max_attempts=retry.attempts,
            failure=failure,
        )
    return False


# --- lost replies -------------------------------------------------------------
# The store raises OutcomeUnknownError where a repeat would answer wrongly;
# these writes carry a unique value (a lease token, a claim marker, the
# snapshot text), so reading it back tells what happened. See docs/errors.md.


def acquire(key: str, value: str, ttl: float | None) -> Plan[bool]:
    """Insert ``key`` = ``value`` unless a live row holds it; True if this call did."""
    try:
        return bool((yield Acquire(key, value, ttl)))
    except OutcomeUnknownError:
        current = yield Load(key)
        if current is not None:
            return bool(current == value)
        return bool((yield Acquire(key, value, ttl)))  # not there: the insert did not commit


def delete_guarded(
    key: str, guard: tuple[str, str], saved_text: str | None, release: bool = False
) -> Plan[bool]:
    """Delete the run's row while its lease holds; True if it is gone.

    With ``release``, the lease row goes in the same statement: True if the
    lease held (the row, if there was one, went with it).
    """
    try:
        return bool((yield Delete(key, guard, release)))
    except OutcomeUnknownError:
        if release and (yield Load(guard[0])) == guard[1]:
            return bool((yield Delete(key, guard, release)))  # still ours: not committed
        current = yield Load(key)
        if current is None:
            return True
        if current != saved_text:
            return False  # another owner wrote it: the lease had changed hands
        if release:
            return False  # the row is there and the lease is not ours: it was lost
        return bool((yield Delete(key, guard)))


def repeated_if_unknown(request: Delete | Release) -> Plan[None]:
    """A write whose answer the runner ignores and whose effect a repeat only confirms
    (a delete without a lease; a release, which removes the lease only while it is
    ours): a lost reply is a reason to send it once more."""
    try:
        yield request
    except OutcomeUnknownError:
        yield request


def commit(tx: Any, key: str, text: str) -> Plan[None]:
    """Commit a transactional step; if the reply to COMMIT is lost, its checkpoint says."""
    try:
        yield Finish(tx, True)
    except Exception:
        if (yield Load(key)) != text:
            raise  # rolled back: the step's writes went with it, it runs again next time
        log.warning("the reply to a step's COMMIT was lost; its checkpoint shows it committed")


def _outcome_of(state: RunState, key: str, raw: Any) -> tuple[dict[str, Any], Result[Any, Any]]:
    if raw is _NOTHING:
        return nothing_outcome(), Ok(None)
    try:
        if isinstance(raw, Thrown):
            check_json(raw.err.error, f"the error value of step {key!r}")
            err = json_text.copy_of(raw.err)
            stored = timeout_failure(err.error) if raw.timed_out else returned_failure(err, "throw")
            return stored, raw.err
        if isinstance(raw, Err):
            check_json(raw.error, f"the error value of step {key!r}")
            return returned_failure(json_text.copy_of(raw)), raw
        value = raw.value if isinstance(raw, Ok) else raw
        check_json(value, f"the value of step {key!r}")
        return success_outcome(json_text.copy_of(value)), Ok(value)
    except DurableUsageError as e:
        raise _usage(state, e) from None


def _usage(state: RunState, error: DurableUsageError) -> DurableUsageError:
    if state.usage_error is None:
        state.usage_error = error
    return error
