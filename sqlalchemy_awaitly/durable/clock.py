"""Time as a run sees it: waiting between retries and in ``step.sleep``, and jitter.

A run takes these from a :class:`Clock`, so a test can hand it one that
records each wait and returns at once, with a fixed random source: no test
sleeps through a backoff.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Protocol


class Clock(Protocol):
    """What a run asks of time."""

    def time(self) -> float:
        """Now, in seconds since the epoch: a wait's end is recorded in the row this
        way, so a run resumed in another process waits only what is left."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a sync run)."""

    async def asleep(self, seconds: float) -> None:
        """Wait ``seconds`` without blocking the event loop (an asyncio run)."""

    def random(self) -> float:
        """A number in [0, 1): the jitter of a retry's delay."""


class SystemClock:
    """The real one: ``time.sleep``, ``asyncio.sleep`` and ``random.random``."""

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def random(self) -> float:
        return random.random()


SYSTEM_CLOCK = SystemClock()
