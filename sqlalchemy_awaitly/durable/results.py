"""What steps and runs return: ``Ok`` or ``Err``, and the runner's own errors as values.

A failed run is a value, not an exception, as in awaitly: the caller reads
``result.ok`` and then ``result.value`` or ``result.error`` / ``result.cause``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

T = TypeVar("T")
E = TypeVar("E")


@dataclass(frozen=True)
class Ok(Generic[T]):
    """A success; a step may return ``Ok(value)`` or just the value."""

    value: T
    ok: ClassVar[Literal[True]] = True


@dataclass(frozen=True)
class Err(Generic[E]):
    """A failure: ``error`` is the stored, JSON-able error value; ``cause`` says why."""

    error: E
    cause: Any = None
    ok: ClassVar[Literal[False]] = False


Result = Ok[T] | Err[E]


@dataclass(frozen=True)
class RunnerError:
    """An error the runner itself returns (not a step's); ``type`` is awaitly's tag."""

    type: ClassVar[str]
    workflow_id: str

    @property
    def message(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class VersionMismatch(RunnerError):
    type: ClassVar[str] = "VERSION_MISMATCH"
    stored_version: int | float
    requested_version: int | float

    @property
    def message(self) -> str:
        return (
            f"Workflow '{self.workflow_id}' has stored state at version {self.stored_version} "
            f"but this run requested version {self.requested_version}. Migrate the stored state "
            f"to the new version (on_version_mismatch), or clear state for this id "
            f"(durable.delete_state(store, '{self.workflow_id}')) and re-run."
        )


@dataclass(frozen=True)
class ConcurrentExecution(RunnerError):
    type: ClassVar[str] = "CONCURRENT_EXECUTION"
    reason: Literal["in-process", "cross-process"]
    idempotency_key: str | None = None

    @property
    def message(self) -> str:
        if self.idempotency_key is not None:
            return (
                f"Workflow '{self.workflow_id}' with idempotency key "
                f"'{self.idempotency_key}' is already running."
            )
        where = " (lease held by another process)" if self.reason == "cross-process" else ""
        return (
            f"Workflow '{self.workflow_id}' is already running{where}. "
            f"Set allow_concurrent=True to allow parallel executions."
        )


@dataclass(frozen=True)
class PersistenceFailed(RunnerError):
    """Loading, saving or deleting state, or taking the lease, failed; ``cause`` says why."""

    type: ClassVar[str] = "PERSISTENCE_ERROR"
    operation: Literal["load", "save", "delete"]
    cause: BaseException = field(compare=False)
    what: str = "state"

    @property
    def message(self) -> str:
        return (
            f"Failed to {self.operation} {self.what} for workflow "
            f"'{self.workflow_id}': {self.cause}"
        )


@dataclass(frozen=True)
class LeaseExpired(RunnerError):
    type: ClassVar[str] = "LEASE_EXPIRED"

    @property
    def message(self) -> str:
        return (
            f"Lease expired for workflow '{self.workflow_id}' during execution. "
            f"The workflow may have been reclaimed by another process."
        )


@dataclass(frozen=True)
class IdempotencyConflict(RunnerError):
    type: ClassVar[str] = "IDEMPOTENCY_CONFLICT"
    idempotency_key: str

    @property
    def message(self) -> str:
        return (
            f"Idempotency key '{self.idempotency_key}' already used with different input "
            f"for workflow '{self.workflow_id}'."
        )


@dataclass(frozen=True)
class NothingToResume(RunnerError):
    """Recovery took the run's lease and found no stored state: another process
    finished it (or it was deleted) after it was listed as crashed. Nothing ran."""

    type: ClassVar[str] = "NOTHING_TO_RESUME"

    @property
    def message(self) -> str:
        return (
            f"Workflow '{self.workflow_id}' has no stored state to resume: another process "
            "finished it, or it was deleted, since it was listed."
        )


@dataclass(frozen=True)
class WorkflowStopped(RunnerError):
    """The run ended before its next step because its process is stopping
    (``StopToken``, a worker's SIGTERM). Not a cancellation: nothing is recorded,
    the lease is released, and the next run resumes it."""

    type: ClassVar[str] = "WORKFLOW_STOPPED"
    last_step_key: str | None = None

    @property
    def message(self) -> str:
        after = f" after step '{self.last_step_key}'" if self.last_step_key else ""
        return (
            f"Workflow '{self.workflow_id}' stopped{after}: its process is shutting down. "
            "It is not cancelled; its next run resumes it."
        )


@dataclass(frozen=True)
class WorkflowCancelled(RunnerError):
    """The run was cancelled (``CancelToken``), or is marked cancelled in its row; it is
    kept, and resumes only after ``durable.uncancel``."""

    type: ClassVar[str] = "WORKFLOW_CANCELLED"
    reason: str | None = None
    last_step_key: str | None = None

    @property
    def message(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        after = f" after step '{self.last_step_key}'" if self.last_step_key else ""
        return (
            f"Workflow '{self.workflow_id}' was cancelled{after}{why}. Its state is kept; "
            f"durable.uncancel(store, '{self.workflow_id}') lets the next run resume it."
        )


@dataclass(frozen=True)
class CorruptState(RunnerError):
    """The stored row is not JSON, or not a snapshot this version reads; nothing was run."""

    type: ClassVar[str] = "CORRUPT_STATE"
    key: str
    reason: str

    @property
    def message(self) -> str:
        return (
            f"Stored state of workflow '{self.workflow_id}' (key {self.key!r}) cannot be read: "
            f"{self.reason}. Nothing was run; fix or delete the row."
        )


@dataclass(frozen=True)
class UnexpectedError:
    """The error value of a step that raised (awaitly's ``UnexpectedError``).

    ``cause`` of the ``Err`` is the exception itself (on replay, a
    :class:`ReplayedException` with its name and message).
    """

    message: str
    type: ClassVar[str] = "UNEXPECTED_ERROR"

    def __str__(self) -> str:
        return self.message


class ReplayedException(Exception):
    """A stored exception cause, rebuilt on replay: its class ``name``, message and stack."""

    def __init__(self, name: str, message: str, stack: str | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.stack = stack

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"
