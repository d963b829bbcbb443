"""How a run behaves, written once for the sync and the asyncio runner.

One call of ``run``: idempotency, the in-process guard, the lease, loading,
the body, and the end. Each plan is a generator of the requests in
``requests.py``; the steps the body calls are in ``steps.py``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from ..errors import CorruptStateError
from ..wire import json_text
from ..wire.documents import (
    decode_state,
    idempotency_record,
    lease_value,
    now_iso,
    read_idempotency,
    same_input,
    to_json,
    version_of,
)
from . import logs, tracing
from .cancel import adopted_cancel, text_or_none
from .errors import DurableUsageError
from .replies import acquire, delete_guarded, repeated_if_unknown
from .requests import (
    AcquireAndLoad,
    Call,
    Delete,
    Load,
    Plan,
    Release,
    RunBody,
    Save,
    StartHeartbeat,
    StopHeartbeat,
    Touch,
)
from .results import (
    ConcurrentExecution,
    CorruptState,
    Err,
    IdempotencyConflict,
    LeaseExpired,
    NothingToResume,
    Ok,
    PersistenceFailed,
    Result,
    VersionMismatch,
    WorkflowCancelled,
    WorkflowStopped,
)
from .saga import compensated
from .snapshots import save_snapshot
from .state import (
    BodyOutcome,
    Lease,
    Migrated,
    RunOptions,
    RunState,
    VersionMismatchInfo,
    this_process,
)
from .tracing import RunTrace
from .values import (
    check_json,
    raised_result,
)

log = logging.getLogger("sqlalchemy_awaitly.durable")


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
    """One call of ``run``: idempotency, guards, lease, load, the body, and the end;
    recorded as a span and metrics when the app has set up OpenTelemetry."""
    trace = tracing.run_trace(o)
    if trace is None:
        return (yield from _run(o, None))
    try:
        result = yield from _run(o, trace)
    except BaseException as e:
        trace.ended(None, e)
        raise
    trace.ended(result, None)
    return result


def _run(o: RunOptions, trace: RunTrace | None) -> Plan[Result[Any, Any]]:
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
            result = yield from _leased(o, marker if not claimed else None, trace)
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


def _leased(o: RunOptions, remark: str | None, trace: RunTrace | None) -> Plan[Result[Any, Any]]:
    """Take the lease (and renew it from now on) and load, then run; ``remark``: a
    marker to rewrite."""
    lease = None
    if o.allow_concurrent:
        try:
            text = yield Load(o.state_key)
        except Exception as e:
            return Err(PersistenceFailed(o.workflow_id, "load", e))
    else:
        lease = Lease(
            o.lock_prefix + o.workflow_id,
            lease_value(uuid.uuid4().hex, this_process()),
            o.lease_ttl,
            o.heartbeat_interval,
        )
        try:
            # One round trip: the lease, then the row, read after the lease is ours.
            request = AcquireAndLoad(lease.key, lease.value, lease.ttl, o.state_key)
            acquired, text = yield request
        except Exception as e:
            yield from _given_back(o, lease)
            return Err(PersistenceFailed(o.workflow_id, "load", e, "the lease and the state"))
        if not acquired:
            return Err(ConcurrentExecution(o.workflow_id, "cross-process"))
    state = RunState(o, lease)
    state.trace = trace
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
            result = yield from _loaded(o, state, text)
            logs.ended(o.workflow_id, result, state.last_key)
            return result
        finally:
            if lease is not None:
                yield StopHeartbeat(state)
    finally:
        if lease is not None and not state.released:
            yield from _given_back(o, lease)


def _given_back(o: RunOptions, lease: Lease) -> Plan[None]:
    """Release ``lease`` if it is ours (a run ending; an attempt to take it that failed,
    which may have taken it all the same). If that fails too, it expires after a TTL."""
    try:
        yield from repeated_if_unknown(Release(lease.key, lease.value))
    except Exception:
        log.warning("could not release the lease of %r; it expires", o.workflow_id)


def _loaded(o: RunOptions, state: RunState, text: str | None) -> Plan[Result[Any, Any]]:
    """The run, from the row's ``text`` (None: no row, a new run)."""
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
        logs.began(o.workflow_id, None if snapshot is None else len(state.steps))
        tracing.began(state, None if snapshot is None else len(state.steps))
        if state.cancelled is not None:  # resumed only once durable.uncancel clears it
            mark = state.cancelled
            reason, last = text_or_none(mark.get("reason")), text_or_none(mark.get("lastStepKey"))
            return Err(WorkflowCancelled(o.workflow_id, reason, last))
    elif o.resume_only:  # listed as crashed, since finished by another process
        return Err(NothingToResume(o.workflow_id))
    else:
        logs.began(o.workflow_id, None)
        tracing.began(state, None)
        if o.registered is not None:  # findable by recovery even if it dies before a step
            unsaved = yield from save_snapshot(state, "the run's start")
            if unsaved is not None:
                return unsaved
    body = yield RunBody(state)
    if state.usage_error is not None:
        raise state.usage_error
    result = yield from compensated(state, _result_of(state, body))
    return (yield from _ended(o, state, result))


def _result_of(state: RunState, body: BodyOutcome) -> Result[Any, Any]:
    if state.stop is not None:
        return state.stop
    if body.exit is not None:
        return body.exit
    if body.raised is not None:
        e = body.raised
        return raised_result(e)
    if isinstance(body.value, (Ok, Err)):
        return body.value
    return Ok(body.value)


def _ended(o: RunOptions, state: RunState, result: Result[Any, Any]) -> Plan[Result[Any, Any]]:
    lease_lost = Err(LeaseExpired(o.workflow_id))  # the row stays: another owner may run it
    if state.lease is not None and state.lease.gone():
        return lease_lost
    if isinstance(result, Err) and isinstance(result.error, WorkflowStopped):
        return result  # the row stays as a crash leaves it (no retention): resumable
    if isinstance(result, Err) and isinstance(result.error, WorkflowCancelled):
        cancelled = result.error
        state.cancelled = {
            "reason": cancelled.reason,
            "lastStepKey": cancelled.last_step_key,
            "at": now_iso(),
        }
        unsaved = yield from save_snapshot(state, "the cancellation")
        return result if unsaved is None else unsaved
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
                guard = state.guard
                deleted = yield from delete_guarded(o.state_key, guard, state.saved_text, release)
                assert state.lease is not None  # a guard is a lease's
                if not deleted and (yield from adopted_cancel(state.lease, guard[1])):
                    # Asked to stop as it ended: it has ended, under the marked lease.
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
