"""Cancelling a run: a token the run checks at each step, and the mark a cancelled run
leaves in its row.

awaitly 1.35 cancels through an ``AbortSignal`` checked as each step starts; the
run ends with ``WORKFLOW_CANCELLED`` (its ``reason`` and the last completed
step's key) and its row is kept, as after a failure, so the next ``run`` resumes
it. Here the row also records the cancellation, in its metadata (which awaitly
carries through unchanged) as ``{"sqlalchemyAwaitly": {"cancelled": {"reason":
..., "lastStepKey": ..., "at": ...}}}``: the run is listed as ``cancelled``, and
a later ``run`` with that id is refused with the same error until
``durable.uncancel`` clears the mark. Stopping a process (SIGTERM, a cancelled
asyncio task) is not a cancellation: the run stays resumable.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..wire import json_text
from ..wire.documents import to_json
from .requests import Load, Plan, Renew, Save
from .waits import WAITS

if TYPE_CHECKING:
    from .state import Lease, RunState

CANCELLED = "cancelled"


class CancelToken:
    """Asks a run to stop before its next step: ``cancel(reason)``, from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reason: str | None = None

    def cancel(self, reason: str | None = None) -> None:
        """Cancel (the first reason given is kept)."""
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"a cancellation reason is a str or None, got {type(reason).__name__}")
        with self._lock:
            if not self._event.is_set():
                self._reason = reason
                self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str | None:
        return self._reason


def cancelled_mark(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    """The cancellation recorded in ``metadata``, or None."""
    section = metadata.get(WAITS)
    mark = section.get(CANCELLED) if isinstance(section, dict) else None
    return dict(mark) if isinstance(mark, dict) else None


def text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


# --- a cancellation asked by another process --------------------------------------
# ``durable.cancel`` marks the running owner's lease row, compare-and-set on its
# exact value: ``{"ownerToken": ..., "cancel": {"reason": ...}}``. The owner's
# fenced writes and renewals compare the whole value, so they fail once; the owner
# then reads the row, finds its own token marked, takes the marked value as its
# lease and writes again, and ends before its next step. Nothing is read in the
# normal course of a run.


def marked(lease_text: str, reason: str | None) -> str | None:
    """The lease value ``lease_text`` marked for cancellation; None if it is not a
    lease value this runner reads (an ``ownerToken`` object)."""
    try:
        lease = json_text.loads(lease_text)
    except ValueError:
        return None
    if not isinstance(lease, dict) or not isinstance(lease.get("ownerToken"), str):
        return None
    if "cancel" in lease:
        return lease_text  # already asked
    return to_json({**lease, "cancel": {"reason": reason}})


def marked_for(current: str | None, ours: str) -> tuple[bool, str | None]:
    """Whether the lease row's ``current`` value is our lease ``ours`` marked for
    cancellation, and the reason given."""
    if current is None or current == ours:
        return False, None
    try:
        now, mine = json_text.loads(current), json_text.loads(ours)
    except ValueError:
        return False, None
    if not (isinstance(now, dict) and isinstance(mine, dict)):
        return False, None
    asked = now.get("cancel")
    if now.get("ownerToken") != mine.get("ownerToken") or not isinstance(asked, dict):
        return False, None
    return True, text_or_none(asked.get("reason"))


def adopted_cancel(lease: Lease, refused: str) -> Plan[bool]:
    """After a fenced write or renewal under the lease value ``refused`` was refused:
    True if the row was marked for cancellation (the lease is still ours, under the
    marked value, which ``lease`` now holds)."""
    if lease.cancel_requested and lease.value != refused:
        return True  # taken meanwhile (by the heartbeat, or the other way round)
    current = yield Load(lease.key)
    asked, reason = marked_for(current, refused)
    if asked:
        assert current is not None
        lease.adopt(current, reason)
    return asked


def saved_under_lease(state: RunState, save: Save) -> Plan[object]:
    """Send ``save`` (fenced by the run's lease); if it is refused because another
    process asked the run to stop, send it again under the marked lease."""
    saved = yield save
    lease, guard = state.lease, save.guard
    if saved is not False or lease is None or guard is None:
        return saved
    if (yield from adopted_cancel(lease, guard[1])):
        saved = yield Save(save.key, save.text, save.ttl, save.tx, lease.guard, save.seq)
    return saved


def renewed(lease: Lease, renewal: Renew) -> Plan[bool]:
    """Extend ``lease`` (the heartbeat's ``renewal`` of it); if refused because another
    process asked the run to stop, extend it under the marked value."""
    answer = yield renewal
    if not answer and (yield from adopted_cancel(lease, renewal.value)):
        answer = yield lease.renewal
    return bool(answer)
