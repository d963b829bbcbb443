"""A run's clock for tests: waits are written down and move its time on, no sleeping."""

from __future__ import annotations


class FakeClock:
    """Waits by writing down how long and moving its time on; ``random()`` is fixed."""

    def __init__(self, random: float = 0.0, now: float = 1_800_000_000.0) -> None:
        self.waits: list[float] = []
        self._random = random
        self.now = now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def random(self) -> float:
        return self._random
