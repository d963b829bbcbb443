"""What runs tell the standard log, under ``sqlalchemy_awaitly.durable``.

INFO: a run started or resumed, completed, failed (at which step, with which
error type), cancelled or stopped, and each retry of a step; WARNING: a lease
lost, a save that failed, a stored row that cannot be read. No values: an
error is named by its type (an awaitly ``type``, an exception's class, or a
string error that reads as a code), never by its message or payload.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from .results import (
    ConcurrentExecution,
    CorruptState,
    Err,
    LeaseExpired,
    PersistenceFailed,
    Result,
    WorkflowCancelled,
    WorkflowStopped,
)

log = logging.getLogger("sqlalchemy_awaitly.durable")
_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def error_type(error: object) -> str:
    """The name of ``error`` that may be logged: its type, never its message."""
    named = error.get("type") if isinstance(error, dict) else getattr(error, "type", None)
    if isinstance(named, str) and _CODE.fullmatch(named):
        return named
    if isinstance(error, str) and _CODE.fullmatch(error):
        return error  # awaitly's string errors are codes: Err("OUT_OF_STOCK")
    return type(error).__name__


def began(workflow_id: str, stored_steps: int | None) -> None:
    """A run has its lease and has read its row (None: there was none)."""
    if not log.isEnabledFor(logging.INFO):
        return
    if stored_steps is None:
        log.info("run %r started", workflow_id)
    else:
        log.info("run %r resumed with %d stored step(s)", workflow_id, stored_steps)


def ended(workflow_id: str, result: Result[Any, Any], last_key: str | None) -> None:
    """A run that had its lease came back with ``result``."""
    if not isinstance(result, Err):
        log.info("run %r completed", workflow_id)
        return
    error = result.error
    if isinstance(error, LeaseExpired):
        log.warning("run %r lost its lease: another process may run it", workflow_id)
    elif isinstance(error, (PersistenceFailed, CorruptState)):
        log.warning("run %r ended: %s", workflow_id, error_type(error))
    elif isinstance(error, WorkflowCancelled):
        log.info("run %r cancelled after step %r", workflow_id, error.last_step_key)
    elif isinstance(error, WorkflowStopped):
        log.info("run %r stopped after step %r: resumable", workflow_id, error.last_step_key)
    elif isinstance(error, ConcurrentExecution):
        log.debug("run %r is running elsewhere", workflow_id)
    else:
        log.info("run %r failed at step %r: %s", workflow_id, last_key, error_type(error))


def retrying(
    workflow_id: str, key: str, attempt: int, attempts: int, delay: float, failure: object
) -> None:
    """Step ``key`` failed and attempt ``attempt`` of ``attempts`` follows after ``delay``."""
    if log.isEnabledFor(logging.INFO):
        log.info(
            "run %r step %r failed (%s); attempt %d of %d in %.3g s",
            workflow_id, key, error_type(failure), attempt, attempts, delay,
        )  # fmt: skip
