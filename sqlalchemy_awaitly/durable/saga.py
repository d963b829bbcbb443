"""Compensation (``compensate=`` on a step): when a run fails, undo its completed steps
in reverse order, each once in total, across crashes.

awaitly 1.35 runs the compensations of the steps one execution ran itself (not of
steps it replayed) when that execution fails, and records nothing of it. This
runner also compensates replayed steps (a run resumed after a crash undoes the
steps the crashed process completed), and records its progress in the snapshot's
metadata (which awaitly carries through unchanged) as ``{"sqlalchemyAwaitly":
{"compensation": {"pending": [step keys, in the order to run], "done": [...],
"errors": [{"stepName": ..., "error": ...}]}}}``. The record is written with the
failed step's checkpoint (or before the first compensation when the workflow
itself failed), and updated after each compensation, so a run resumed after a
crash mid-way runs only those still pending.

A failure replayed from the row (a rerun of a failed run) runs no compensation
unless the record says some are pending: the execution that stored the failure
ran them (awaitly's, by awaitly's rule). Runner errors (a lost lease, a failed
save, ...) compensate nothing: the run did not fail, it could not go on.
"""

from __future__ import annotations

import logging
from typing import Any

from .compensation import planned
from .requests import Call, Plan
from .results import Err, Result, RunnerError
from .snapshots import save_snapshot
from .state import RunState
from .values import encode_exception, text_of

log = logging.getLogger("sqlalchemy_awaitly.durable")

SAGA_COMPENSATION_ERROR = "SAGA_COMPENSATION_ERROR"


def compensated(state: RunState, result: Result[Any, Any]) -> Plan[Result[Any, Any]]:
    """``result`` once the run's compensations have run (if it failed and has any): a
    failing compensation makes it ``SAGA_COMPENSATION_ERROR`` with the original error
    and each compensation's failure."""
    if not isinstance(result, Err) or isinstance(result.error, RunnerError):
        return result
    record = state.compensation
    if record is None:
        if state.replayed_failure or not state.compensations:
            return result
        record = state.compensation = planned(state.compensations)
        stopped = yield from save_snapshot(state, "the compensation's progress")
        if stopped is not None:
            return stopped
    raised: dict[str, BaseException] = {}
    while record.pending:
        key = record.pending[0]
        registered = state.compensations.get(key)
        if registered is None:  # the workflow did not reach that step this time
            failure: BaseException | None = LookupError(f"step {key!r} registered no compensation")
        else:
            failure = None
            try:
                yield Call(registered.fn, (registered.value,))
            except Exception as e:
                failure = e
        if failure is not None:
            name = registered.name if registered is not None else key
            record.errors.append({"stepName": name, "error": encode_exception(failure)})
            raised[name] = failure
            log.warning("compensation of step %r failed: %s", key, text_of(failure))
        record.pending.pop(0)
        record.done.append(key)
        stopped = yield from save_snapshot(state, "the compensation's progress")
        if stopped is not None:
            return stopped
    if not record.errors:
        return result
    errors = [
        {"stepName": e.get("stepName"), "error": raised.get(str(e.get("stepName")), e.get("error"))}
        for e in record.errors
    ]
    saga = {
        "type": SAGA_COMPENSATION_ERROR,
        "originalError": result.error,
        "compensationErrors": errors,
    }
    return Err(saga, result.cause)
