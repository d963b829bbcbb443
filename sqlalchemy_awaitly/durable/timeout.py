"""A step's time limit, per attempt, with awaitly 1.35's four behaviours.

When an attempt runs past ``seconds``:

- ``"error"`` (the default): the attempt fails with ``error``, else with
  ``{"type": "STEP_TIMEOUT", "stepName", "stepKey", "timeoutMs", "attempt"}``,
  which ``retry`` may retry; the work is told to stop (an asyncio step's task
  is cancelled; a sync step's ``signal`` is set, see below).
- ``"disconnect"``: the same failure, but the work is left running, unwatched.
- ``"option"``: the step succeeds with no value (stored ``{"ok": true}``), not retried.
- a function: called with a :class:`TimeoutInfo`; what it returns is the failure.

A sync step with a time limit runs in a thread of its own, since Python cannot
stop a running function from outside: on a timeout the runner stops waiting
for it, and with ``signal=True`` the function is handed a ``threading.Event``
(an ``asyncio.Event`` for an asyncio step) that is set when it should stop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from ..errors import InvalidInputError

Behaviour = Literal["error", "option", "disconnect"]
_BEHAVIOURS = ("error", "option", "disconnect")
UNSET: Any = object()  # an option not given (None is a value an error may be)


@dataclass(frozen=True)
class TimeoutInfo:
    """What an ``on_timeout`` function is told (awaitly's ``{name, key, ms}``)."""

    name: str
    key: str
    seconds: float
    attempt: int


@dataclass(frozen=True)
class Timeout:
    """At most ``seconds`` (or a ``timedelta``) per attempt; see the module docs."""

    seconds: float | timedelta
    on_timeout: Behaviour | Callable[[TimeoutInfo], Any] = "error"
    error: Any = UNSET
    signal: bool = False

    def __post_init__(self) -> None:
        seconds = self.limit
        if not math.isfinite(seconds) or seconds <= 0:
            raise InvalidInputError(f"a timeout must be positive and finite, got {self.seconds!r}")
        if not callable(self.on_timeout) and self.on_timeout not in _BEHAVIOURS:
            raise InvalidInputError(
                f"on_timeout must be one of {_BEHAVIOURS} or a function, got {self.on_timeout!r}"
            )
        if not isinstance(self.signal, bool):
            raise TypeError(f"signal must be True or False, got {self.signal!r}")

    @property
    def limit(self) -> float:
        value = self.seconds
        seconds = value.total_seconds() if isinstance(value, timedelta) else value
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"a timeout is seconds or a timedelta, got {type(value).__name__}")
        return float(seconds)

    @property
    def stops_the_work(self) -> bool:
        """Whether the work is told to stop (all but ``"disconnect"``)."""
        return self.on_timeout != "disconnect"

    def failure(self, name: str, key: str, attempt: int) -> Any:
        """The failure value, unless a function gives it (:meth:`info` for that)."""
        if self.error is not UNSET:
            return self.error
        return {
            "type": "STEP_TIMEOUT",
            "stepName": name,
            "stepKey": key,
            "timeoutMs": round(self.limit * 1000),
            "attempt": attempt,
        }


class TimedOut(Exception):
    """What a runner raises into the plan when an attempt ran past its limit."""
