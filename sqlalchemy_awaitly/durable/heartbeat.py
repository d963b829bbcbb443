"""Renewing a run's lease while it runs, started only once a renewal falls due.

Most runs end well inside one heartbeat interval (20 s by default). Starting a
thread (or a task) for each and joining it again cost a short run more than
all of its own Python did, so a run's renewer starts when its first renewal is
due: a process-wide timer thread keeps the due times. That thread never
touches a database, and each due run gets its own renewal thread, so a renewal
hanging on one server cannot delay another run's.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable

from .requests import Renew
from .state import Lease

Renewal = Callable[[Renew], object]
"""Performs one renewal; its answer is truthy if the lease was extended."""


class RenewalThread:
    """Renews ``lease`` now and every ``interval`` after, until stopped or lost."""

    def __init__(self, renew: Renewal, lease: Lease) -> None:
        self._renew = renew
        self._lease = lease
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="awaitly-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        # A renewal hanging on the network must not hang the run: the lease
        # then counts as lost after a lease time anyway (Lease.gone).
        self._thread.join(self._lease.interval + 1.0)

    def _beat(self) -> None:
        lease = self._lease
        while not lease.lost and not self._stopped.is_set():
            try:
                answer: bool | None = bool(self._renew(lease.renewal))
            except Exception:
                answer = None
            lease.renewed(answer)
            if self._stopped.wait(lease.interval):
                return


class Pending:
    """One run's place on the timer: cancelled when the run ends, else started."""

    __slots__ = ("cancelled", "lease", "renew", "thread")

    def __init__(self, renew: Renewal, lease: Lease) -> None:
        self.renew = renew
        self.lease = lease
        self.cancelled = False
        self.thread: RenewalThread | None = None


class Heartbeats:
    """The process-wide timer that starts each run's renewal thread when it is due.

    The timer ends once no run has waited for ``idle`` seconds, so a process
    that has stopped running workflows (a server's parent about to fork its
    workers, say) is not left with a thread of ours.
    """

    def __init__(self, idle: float = 5.0) -> None:
        self._idle = idle
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        # A forked child has none of its parent's threads, and none of its runs.
        self._due = threading.Condition()
        self._heap: list[tuple[float, int, Pending]] = []
        self._waiting = 0  # entries on the heap neither cancelled nor started
        self._serial = itertools.count()
        self._timer: threading.Thread | None = None
        # When the timer wakes by itself next (monotonic): a run is woken for only
        # if it must wake sooner. Waking it at each run's start and end handed the
        # GIL to it twice a run, which a 10-step run paid for in its wall time.
        self._wakes = math.inf

    @property
    def running(self) -> bool:
        """Whether the timer thread is there (for the tests)."""
        with self._due:
            return self._timer is not None

    def start(self, renew: Renewal, lease: Lease) -> Pending:
        pending = Pending(renew, lease)
        with self._due:
            when = time.monotonic() + lease.interval
            heapq.heappush(self._heap, (when, next(self._serial), pending))
            self._waiting += 1
            if self._timer is None:
                self._wakes = math.inf
                self._timer = threading.Thread(
                    target=self._run, name="awaitly-lease-timer", daemon=True
                )
                self._timer.start()
            elif when < self._wakes:
                self._due.notify()  # due sooner than what the timer sleeps for
        return pending

    def stop(self, pending: Pending) -> None:
        with self._due:
            thread = pending.thread
            if thread is None and not pending.cancelled:
                pending.cancelled = True  # left on the heap: dropped when it comes due
                self._waiting -= 1
                if self._waiting == 0:  # only cancelled entries: drop them all now
                    self._heap.clear()
                    if self._wakes > time.monotonic() + self._idle:
                        self._due.notify()  # to wait for idleness, not for them
        if thread is not None:
            thread.stop()

    def _run(self) -> None:
        due, heap = self._due, self._heap
        while True:
            with due:
                while not heap or heap[0][2].cancelled or heap[0][0] > time.monotonic():
                    if heap and heap[0][2].cancelled:
                        heapq.heappop(heap)
                    elif heap:
                        self._wakes = heap[0][0]
                        due.wait(self._wakes - time.monotonic())
                    else:
                        self._wakes = time.monotonic() + self._idle
                        if due.wait(self._idle) or heap:
                            continue
                        self._timer = None  # idle: a new run starts a new timer
                        return
                pending = heapq.heappop(heap)[2]
                self._waiting -= 1
                pending.thread = RenewalThread(pending.renew, pending.lease)
                pending.thread.start()


heartbeats = Heartbeats()


class AsyncHeartbeat:
    """The asyncio flavour: a timer handle on the loop, a task only once a renewal is due."""

    def __init__(self, renew: Callable[[Renew], Awaitable[object]], lease: Lease) -> None:
        self._renew = renew
        self._lease = lease
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(lease.interval, self._due)

    def _due(self) -> None:
        self._task = asyncio.ensure_future(self._beat())

    async def stop(self) -> None:
        self._timer.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # not ``await task``: that re-raises its cancellation

    def abandon(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()

    async def _beat(self) -> None:
        lease = self._lease
        while not lease.lost:
            try:
                answer: bool | None = bool(await self._renew(lease.renewal))
            except Exception:
                answer = None
            lease.renewed(answer)
            await asyncio.sleep(lease.interval)
