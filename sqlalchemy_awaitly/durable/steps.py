"""One step of a run: replayed if stored, else run (retried, timed, typed) and recorded.

Written once for the sync and the asyncio runner (see ``requests.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Literal

from ..errors import InvalidInputError
from ..wire import json_text
from . import logs, tracing
from .cancel import saved_under_lease
from .children import ChildNotRun
from .compensation import Undo, planned
from .errors import DuplicateStepKeyError, DurableUsageError
from .groups import Group
from .replies import commit
from .requests import (
    Abandon,
    Begin,
    Call,
    Finish,
    Flush,
    NextDone,
    Pause,
    Plan,
    Save,
    Spawn,
)
from .results import (
    Err,
    LeaseExpired,
    Ok,
    PersistenceFailed,
    Result,
    WorkflowCancelled,
    WorkflowStopped,
)
from .retry import Retry
from .state import (
    RunState,
    StepExit,
)
from .timeout import UNSET, TimedOut, Timeout, TimeoutInfo
from .values import (
    check_json,
    nothing_outcome,
    raised_failure,
    raised_result,
    replay,
    returned_failure,
    success_outcome,
    timeout_failure,
)

log = logging.getLogger("sqlalchemy_awaitly.durable")


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
    ``group``: a parallel group, whose members run instead of ``fn``.
    ``recorded`` False: nothing is stored (a group without a key, a race); ``key``
    then only names it in events.
    """

    key: str
    fn: Callable[..., Any] | None
    session: bool | None = None
    name: str | None = None
    retry: Retry | int | None = None
    pause: float | timedelta | None = None
    errors: ErrorMap | None = None
    timeout: Timeout | float | timedelta | None = None
    group: Group | None = None
    recorded: bool = True
    compensate: Callable[[Any], Any] | None = None

    @property
    def label(self) -> str:
        return self.name or self.key

    def checked(self) -> StepSpec:
        """This step with its options checked: ``retry=3`` is ``Retry(3)``, a pause in
        seconds; what is wrong raises (the caller makes it the run's usage error)."""
        plain = self.retry is None and self.pause is None and self.name is None
        plain = plain and self.errors is None and self.timeout is None and self.group is None
        plain = plain and self.compensate is None
        if plain and type(self.key) is str and self.key:
            return self  # a plain step, as most are
        if not isinstance(self.key, str) or not self.key:
            raise DurableUsageError(f"a step key must be a non-empty str, got {self.key!r}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise DurableUsageError(f"a step name must be a non-empty str, got {self.name!r}")
        if self.compensate is not None and not callable(self.compensate):
            raise DurableUsageError(f"step {self.key!r}: compensate must be callable")
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
    if not spec.recorded:
        return (yield from _unrecorded(state, spec))
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
    _check_running(state)
    name = spec.label
    if key in state.stored:
        state.emit("step_skipped", key, step_name=name)
        answer = replay(state.steps[key])
        if state.trace is not None:
            tracing.replayed(state, key, name, answer if isinstance(answer, Err) else Ok(answer))
        if isinstance(answer, Err):
            state.replayed_failure = True
            raise state.end(answer)
        _register(state, spec, answer)
        state.last_done = key
        return json_text.copy_of(answer)
    traced = None if state.trace is None else tracing.step_began(state, key, name)
    try:
        result = yield from _run_and_record(state, spec)
    except BaseException as e:  # interrupted before its record: the step may be run again
        state.seen.discard(key)
        if traced is not None:
            tracing.step_ended(state, traced, key, None, e)
        raise
    if traced is not None:
        tracing.step_ended(state, traced, key, result)
    state.has_row = True
    state.emit("persist_success", key, step_name=name)
    if isinstance(result, Err):
        cause = result.cause if isinstance(result.cause, Exception) else None
        state.emit("step_error", key, cause, step_name=name)
        raise state.end(result)
    state.emit("step_success", key, step_name=name)
    _register(state, spec, result.value)
    state.last_done = key
    return result.value


def _register(state: RunState, spec: StepSpec, value: Any) -> None:
    """A completed step's compensation, to run if the run fails (``saga.py``)."""
    if spec.compensate is not None:
        copy = json_text.copy_of(value)
        state.compensations[spec.key] = Undo(spec.label, copy, spec.compensate)


_NOTHING = object()  # what a sleep "returns": stored as awaitly's ok(undefined)


def _unrecorded(state: RunState, spec: StepSpec) -> Plan[Any]:
    """A step that stores nothing (a group without a key, a race): run every time,
    and a failure ends the run as a step's does, without a record of it."""
    _check_running(state)
    name = spec.label
    state.emit("step_start", spec.key, step_name=name)
    traced = None if state.trace is None else tracing.step_began(state, spec.key, name)
    try:
        raw = yield from _group(state, spec) if spec.group is not None else _called(spec)
    except DurableUsageError as e:
        if traced is not None:
            tracing.step_ended(state, traced, spec.key, None, e)
        raise _usage(state, e) from None
    except Exception as e:
        result: Result[Any, Any] = raised_result(e)
    except BaseException as e:
        if traced is not None:
            tracing.step_ended(state, traced, spec.key, None, e)
        raise
    else:
        result = raw if isinstance(raw, (Ok, Err)) else Ok(raw)
    if traced is not None:
        tracing.step_ended(state, traced, spec.key, result)
    if isinstance(result, Err):
        cause = result.cause if isinstance(result.cause, Exception) else None
        state.emit("step_error", spec.key, cause, step_name=name)
        raise state.end(result)
    state.emit("step_success", spec.key, step_name=name)
    return result.value


def _called(spec: StepSpec) -> Plan[Any]:
    assert spec.fn is not None
    return (yield Call(spec.fn, ()))


def _check_running(state: RunState) -> None:
    """Raise what ends the run here, if anything does: a usage error the workflow
    swallowed, a failure it went past, a lease lost, a cancellation, a stop."""
    workflow_id, token, lease = state.options.workflow_id, state.options.cancel, state.lease
    if state.usage_error is not None:
        raise state.usage_error
    if state.stop is not None:
        raise StepExit(state.stop)
    if lease is not None and lease.gone():
        raise state.end(Err(LeaseExpired(workflow_id)))
    if token is not None and token.cancelled:  # by this process
        raise state.end(Err(WorkflowCancelled(workflow_id, token.reason, state.last_done)))
    if lease is not None and lease.cancel_requested:  # by another (``durable.cancel``)
        reason = lease.cancel_reason
        raise state.end(Err(WorkflowCancelled(workflow_id, reason, state.last_done)))
    stop = state.options.stop
    if stop is not None and stop.stopped:  # a shutdown: resumable, nothing recorded
        raise state.end(Err(WorkflowStopped(workflow_id, state.last_done)))


def _group(state: RunState, spec: StepSpec) -> Plan[Any]:
    """Run a group's members side by side; the answer is what the group's step returns.

    ``all`` / ``map``: every member's value (a list or a dict), or the first failure
    (a member's ``Err`` is returned, an exception raised) after which the members
    still running are abandoned. A recorded group remembers each finished member
    in the snapshot, and a resumed one runs only the others. ``race``: the first
    member to end, whichever way it ends; the others are abandoned.
    """
    group = spec.group
    assert group is not None
    finished = dict(state.groups.get(spec.key, {})) if spec.recorded else {}
    todo = tuple((m, fn) for m, fn in group.members if m not in finished)
    if group.kind == "race":
        todo, wanted = group.members, 1
    else:
        wanted = len(todo)
    if not todo:
        return group.answer(finished)
    handle = yield Spawn(todo, group.limit)
    try:
        for _ in range(wanted):
            member, answer, raised = yield NextDone(handle)
            if raised is not None:
                raise raised
            if group.kind == "race" or isinstance(answer, Err):
                return answer
            value = answer.value if isinstance(answer, Ok) else answer
            finished[member] = value
            if spec.recorded and len(finished) < len(group.members):
                check_json(value, f"the value of member {member!r} of group {spec.key!r}")
                state.groups.setdefault(spec.key, {})[member] = json_text.copy_of(value)
                yield from _save_progress(state, spec)
    finally:
        yield Abandon(handle)
    return group.answer(finished)


def _run_and_record(state: RunState, spec: StepSpec) -> Plan[Result[Any, Any]]:
    o = state.options
    key, name = spec.key, spec.label
    state.emit("step_start", key, step_name=name)
    began = o.clock.time()
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
            elif spec.group is not None:
                raw = yield from _group(state, spec)
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
        except ChildNotRun as e:  # not the child's failure: nothing to record
            raise state.end(e.result) from None
        except Exception as e:
            failed: Result[Any, Any] = raised_result(e)
            outcome, result = raised_failure(e), failed
        else:
            outcome, result = _outcome_of(state, key, raw)
        state.waits.pop(key, None)  # ended: its checkpoint forgets the wait
        state.groups.pop(key, None)  # and a group's finished members
        if not result.ok and state.compensations and state.compensation is None:
            state.compensation = planned(state.compensations)  # saved with the failure: never lost
        state.record(key, outcome, max(0, round((o.clock.time() - began) * 1000)))
        text = state.snapshot_text(key)
        seq = state.next_seq()
        try:
            if tx is not None and result.ok:
                saved = yield from saved_under_lease(
                    state, Save(o.state_key, text, None, tx, state.guard, seq)
                )
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
                saved = yield from saved_under_lease(
                    state, Save(o.state_key, text, None, None, state.guard, seq)
                )
        except Exception as e:
            raise _unsaved(state, spec, e) from None
        _saved(state, spec, text, seq, saved)
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
                if spec.retry is None and spec.timeout is None:
                    return Thrown(raw)  # awaitly: a caught throw, unless retried or timed
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
    state.waits[spec.key] = record
    yield from _save_progress(state, spec)


def _save_progress(state: RunState, spec: StepSpec) -> Plan[None]:
    """Save the snapshot while ``spec`` is in progress (a wait, a group's members), under
    the lease, as a checkpoint is saved: a lost lease or a failed save ends the run."""
    text = state.snapshot_text(spec.key)
    seq = state.next_seq()
    try:
        save = Save(state.options.state_key, text, None, None, state.guard, seq)
        saved = yield from saved_under_lease(state, save)
    except Exception as e:
        raise _unsaved(state, spec, e) from None
    _saved(state, spec, text, seq, saved)
    state.has_row = True


def _unsaved(state: RunState, spec: StepSpec, error: Exception) -> StepExit:
    """A snapshot that could not be saved ends the run (the step's outcome, if recorded,
    is dropped: it was not stored)."""
    if spec.key in state.steps:
        state.forget(spec.key)
    if state.trace is not None:
        tracing.checkpoint(state, "failed")
    state.emit("persist_error", spec.key, error, step_name=spec.label)
    return state.end(Err(PersistenceFailed(state.options.workflow_id, "save", error)))


def _saved(state: RunState, spec: StepSpec, text: str, seq: int, saved: object) -> None:
    """After a save under the lease: the newest text written is kept (a lost reply is
    resolved against it); False, the lease changed hands, ends the run."""
    if saved is False:  # this owner may write no more
        if state.trace is not None:
            tracing.checkpoint(state, "lease_lost")
        if spec.key in state.steps:
            state.forget(spec.key)
        assert state.lease is not None
        state.lease.lost = True
        raise state.end(Err(LeaseExpired(state.options.workflow_id)))
    if state.trace is not None:
        tracing.checkpoint(state, "saved")
    if seq > state.saved_seq:
        state.saved_text, state.saved_seq = text, seq


def _timed_out(state: RunState, spec: StepSpec, limit: Timeout, attempt: int) -> Plan[Any]:
    """An attempt ran past ``limit``: the ``step_timeout`` event, and the failure value."""
    name = spec.label
    state.emit("step_timeout", spec.key, step_name=name, attempt=attempt, timeout=limit.limit)
    tracing.timed_out(state, spec.key, attempt, limit.limit)
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
        logs.retrying(
            state.options.workflow_id, spec.key, attempt + 1, retry.attempts, delay, failure
        )
        tracing.retrying(state, spec.key, attempt + 1, delay, failure)
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


def _outcome_of(state: RunState, key: str, raw: Any) -> tuple[dict[str, Any], Result[Any, Any]]:
    if raw is _NOTHING:
        return nothing_outcome(), Ok(None)
    try:
        if isinstance(raw, Thrown):
            check_json(raw.err.error, "the error value of step", key)
            err = json_text.copy_of(raw.err)
            stored = timeout_failure(err.error) if raw.timed_out else returned_failure(err, "throw")
            return stored, raw.err
        if isinstance(raw, Err):
            check_json(raw.error, "the error value of step", key)
            return returned_failure(json_text.copy_of(raw)), raw
        value = raw.value if isinstance(raw, Ok) else raw
        check_json(value, "the value of step", key)
        return success_outcome(json_text.copy_of(value)), Ok(value)
    except DurableUsageError as e:
        raise _usage(state, e) from None


def _usage(state: RunState, error: DurableUsageError) -> DurableUsageError:
    if state.usage_error is None:
        state.usage_error = error
    return error
