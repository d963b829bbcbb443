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
from typing import Any

from .waits import WAITS

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
