"""The I/O a run's plans ask for, and what a plan is.

A plan is a generator: it yields one of these requests and receives the
answer, or the exception, from a driver (``drivers.py``) that performs it
with blocking calls or with ``await``; so a run's decisions are written once
for both flavours.

A run makes a request or two per step, so they are plain slotted dataclasses:
a frozen one's ``__init__`` costs four times as much. Nothing changes a
request once it is made.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .clock import Clock
from .timeout import Timeout

if TYPE_CHECKING:
    from .state import RunState

T = TypeVar("T")


# --- I/O requests -----------------------------------------------------------


@dataclass(slots=True)
class Load:
    key: str


@dataclass(slots=True)
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


@dataclass(slots=True)
class Delete:
    """Delete ``key``; with ``guard``, only while the lease holds, and with ``release``
    the lease row too, in the same statement (True: the lease held, both are gone)."""

    key: str
    guard: tuple[str, str] | None = None
    release: bool = False


@dataclass(slots=True)
class Touch:
    key: str
    ttl: float | None


@dataclass(slots=True)
class Acquire:
    """Insert ``key`` unless a live row holds it (a lease; an idempotency claim)."""

    key: str
    value: str
    ttl: float | None


@dataclass(slots=True)
class AcquireAndLoad:
    """``Acquire`` a lease, then ``Load`` the row it guards, in one round trip where the
    store can. The answer: (the lease holds ``value`` now, the row's text or None)."""

    key: str
    value: str
    ttl: float | None
    load: str


@dataclass(slots=True)
class Renew:
    """Extend a lease, only while it still holds its owner's value (the heartbeat)."""

    key: str
    value: str
    ttl: float


@dataclass(slots=True)
class Release:
    key: str
    value: str


@dataclass(slots=True)
class Keys:
    prefix: str


@dataclass(slots=True)
class LoadMany:
    keys: list[str]


@dataclass(slots=True)
class DeleteMany:
    keys: list[str]


@dataclass(slots=True)
class Call:
    """Call user code (a step, a hook); the driver awaits it in the asyncio flavour."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    limit: Timeout | None = None  # a step's attempt: TimedOut past it


@dataclass(slots=True)
class Spawn:
    """Start a group's ``members`` (id, function) side by side, at most ``limit`` at a
    time (None: all at once). The answer is the driver's handle of the group."""

    members: tuple[tuple[str, Callable[[], Any]], ...]
    limit: int | None = None


@dataclass(slots=True)
class NextDone:
    """Wait for the next member of ``group`` to end. The answer: (member id, what it
    returned, None) or (member id, None, the exception it raised)."""

    group: Any


@dataclass(slots=True)
class Abandon:
    """Stop waiting for ``group``: members not started never start, asyncio members
    still running are cancelled (sync ones run on unwatched: Python cannot stop a thread)."""

    group: Any


@dataclass(slots=True)
class Pause:
    """Wait ``seconds`` on the run's clock: between a step's attempts, or ``step.sleep``."""

    seconds: float
    clock: Clock


@dataclass(slots=True)
class Begin:
    """Open a transaction on the store's engine; ``session``: hand the step a Session."""

    session: bool


@dataclass(slots=True)
class Flush:
    """Write a step's pending Session changes now, so their errors are the step's."""

    tx: Any


@dataclass(slots=True)
class Finish:
    tx: Any
    commit: bool


@dataclass(slots=True)
class RunBody:
    state: RunState


@dataclass(slots=True)
class StartHeartbeat:
    state: RunState


@dataclass(slots=True)
class StopHeartbeat:
    state: RunState


Request = (
    Load
    | Save
    | Delete
    | Touch
    | Acquire
    | AcquireAndLoad
    | Renew
    | Release
    | Keys
    | LoadMany
    | DeleteMany
    | Call
    | Spawn
    | NextDone
    | Abandon
    | Pause
    | Begin
    | Flush
    | Finish
    | RunBody
    | StartHeartbeat
    | StopHeartbeat
)
Plan = Generator[Request, Any, T]
