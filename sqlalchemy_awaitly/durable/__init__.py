"""The durable runner: ``durable.run`` for Python, resumable by Node.js awaitly 1.35.

::

    from sqlalchemy_awaitly import durable

    def checkout(step, deps):
        user = step(lambda: deps.fetch_user("123"), key="fetch-user")
        return step(lambda: deps.create_order(user), key="create-order")

    result = durable.run(deps, checkout, id="checkout-123", store=persistence)
"""

from ..wire.documents import LOCK_PREFIX
from .api import DEFAULT_LEASE_TTL, run, run_async
from .cancel import CancelToken
from .clock import Clock, SystemClock
from .drivers import AsyncStep, Step
from .errors import DuplicateStepKeyError, DurableUsageError, UnsupportedValueError
from .helpers import (
    DeleteReport,
    PendingRun,
    RunState,
    cancel,
    cancel_async,
    clear_state,
    clear_state_async,
    delete_state,
    delete_state_async,
    delete_states,
    delete_states_async,
    has_state,
    has_state_async,
    list_pending,
    list_pending_async,
    retry_step,
    retry_step_async,
    uncancel,
    uncancel_async,
)
from .memory import MemoryStore
from .recovery import Outcome, Recovery, Resumption, recover, recover_async
from .registry import Registry
from .results import (
    ConcurrentExecution,
    CorruptState,
    Err,
    IdempotencyConflict,
    LeaseExpired,
    NothingToResume,
    Ok,
    PersistenceFailed,
    ReplayedException,
    Result,
    RunnerError,
    UnexpectedError,
    VersionMismatch,
    WorkflowCancelled,
    WorkflowStopped,
)
from .retry import Retry
from .state import DurableEvent, Migrated, VersionMismatchInfo
from .stopping import StopToken
from .timeout import Timeout, TimeoutInfo
from .worker import Worker

__all__ = [
    "DEFAULT_LEASE_TTL",
    "LOCK_PREFIX",
    "AsyncStep",
    "CancelToken",
    "Clock",
    "ConcurrentExecution",
    "CorruptState",
    "DeleteReport",
    "DuplicateStepKeyError",
    "DurableEvent",
    "DurableUsageError",
    "Err",
    "IdempotencyConflict",
    "LeaseExpired",
    "MemoryStore",
    "Migrated",
    "NothingToResume",
    "Ok",
    "Outcome",
    "PendingRun",
    "PersistenceFailed",
    "Recovery",
    "Registry",
    "ReplayedException",
    "Result",
    "Resumption",
    "Retry",
    "RunState",
    "RunnerError",
    "Step",
    "StopToken",
    "SystemClock",
    "Timeout",
    "TimeoutInfo",
    "UnexpectedError",
    "UnsupportedValueError",
    "VersionMismatch",
    "VersionMismatchInfo",
    "Worker",
    "WorkflowCancelled",
    "WorkflowStopped",
    "cancel",
    "cancel_async",
    "clear_state",
    "clear_state_async",
    "delete_state",
    "delete_state_async",
    "delete_states",
    "delete_states_async",
    "has_state",
    "has_state_async",
    "list_pending",
    "list_pending_async",
    "recover",
    "recover_async",
    "retry_step",
    "retry_step_async",
    "run",
    "run_async",
    "uncancel",
    "uncancel_async",
]
