"""A step's retry policy, with awaitly 1.35's arithmetic and defaults.

``attempts`` counts every try, the first included. After failed attempt
``n`` the step waits ``floor(min(base, max_delay) * (1 + 0.25 * r))``
milliseconds, ``r`` in [0, 1) when ``jitter`` is on (else 0), where ``base``
is ``initial_delay`` (fixed), ``initial_delay * n`` (linear) or
``initial_delay * 2 ** (n - 1)`` (exponential): the jitter comes after the
cap, so a delay may pass ``max_delay`` by up to a quarter, as in awaitly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from ..errors import InvalidInputError

Backoff = Literal["fixed", "linear", "exponential"]
ShouldRetry = Callable[[Any, int], bool]
"""``should_retry(error, attempt)``: the failed attempt's error (the exception it
raised, or the ``error`` of the ``Err`` it returned) and its number, from 1."""
OnRetry = Callable[[Any, int, float], object]
"""``on_retry(error, attempt, delay)``: called before waiting ``delay`` seconds."""

_BACKOFFS = ("fixed", "linear", "exponential")


@dataclass(frozen=True)
class Retry:
    """Try a step up to ``attempts`` times; delays in seconds (or ``timedelta``).

    Defaults as awaitly's: exponential backoff from 0.1 s, at most 30 s, with jitter.
    """

    attempts: int
    backoff: Backoff = "exponential"
    initial_delay: float | timedelta = 0.1
    max_delay: float | timedelta = 30.0
    jitter: bool = True
    should_retry: ShouldRetry | None = None
    on_retry: OnRetry | None = None

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise TypeError(f"attempts must be an int, got {type(self.attempts).__name__}")
        if self.attempts < 1:
            raise InvalidInputError(
                f"attempts counts every try, the first included: at least 1, got {self.attempts}"
            )
        if self.backoff not in _BACKOFFS:
            raise InvalidInputError(f"backoff must be one of {_BACKOFFS}, got {self.backoff!r}")
        _seconds(self.initial_delay, "initial_delay")
        _seconds(self.max_delay, "max_delay")
        if not isinstance(self.jitter, bool):
            raise TypeError(f"jitter must be True or False, got {self.jitter!r}")
        for name in ("should_retry", "on_retry"):
            hook = getattr(self, name)
            if hook is not None and not callable(hook):
                raise TypeError(f"{name} must be callable, got {type(hook).__name__}")

    def delay(self, attempt: int, random: float) -> float:
        """Seconds to wait after failed attempt ``attempt`` (from 1); ``random`` in [0, 1)."""
        initial_ms = _seconds(self.initial_delay, "initial_delay") * 1000
        if self.backoff == "fixed":
            base = initial_ms
        elif self.backoff == "linear":
            base = initial_ms * attempt
        else:
            base = initial_ms * 2.0 ** min(attempt - 1, 1023)
        capped = min(base, _seconds(self.max_delay, "max_delay") * 1000)
        if self.jitter:
            capped += capped * 0.25 * random
        return math.floor(capped) / 1000


def _seconds(value: object, name: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be seconds or a timedelta, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidInputError(f"{name} must be finite and not negative, got {value!r}")
    return float(seconds)
