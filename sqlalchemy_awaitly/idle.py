"""Connections of the store's own engine, kept between calls."""

from __future__ import annotations

import threading
import time
from collections import deque

from sqlalchemy.pool import Pool, PoolProxiedConnection, QueuePool

_RECHECK_SECONDS = 0.05


class IdleConnections:
    """The store's own connections between calls, most recently used first.

    Checking a connection out of SQLAlchemy's pool and back in costs about as
    much client CPU as a key lookup itself, and far more when threads contend
    for the pool's lock. An engine the store built serves nobody else, so the
    store keeps its connections here: a call pops one (a deque operation,
    atomic under the GIL) and asks the pool only when none is kept and the
    pool still has room. With a caller's engine nothing is kept.

    Once every connection the pool may open is out, threads wait here for a
    kept one (``take_or_wait``) rather than in the pool, which would never see
    it. Coroutines cannot block the loop to wait here, so an asyncio store
    gives a connection back to the pool instead when the pool is full.
    """

    def __init__(self, pool: Pool, enabled: bool, threads_wait_here: bool) -> None:
        self._pool = pool
        self._enabled = enabled and isinstance(pool, QueuePool)
        self._threads_wait_here = threads_wait_here
        self._capacity: int | None = None
        self._timeout = 30.0
        if isinstance(pool, QueuePool):
            overflow = pool._max_overflow  # no public accessors for these two
            self._capacity = None if overflow < 0 else pool.size() + overflow
            self._timeout = pool._timeout
        self._idle: deque[PoolProxiedConnection] = deque()
        self._kept = threading.Condition()
        self._waiting = 0
        self._closed = False

    def _pool_is_full(self) -> bool:
        checked_out: int = self._pool.checkedout()  # type: ignore[attr-defined]
        return self._capacity is not None and checked_out >= self._capacity

    def take(self) -> PoolProxiedConnection | None:
        """A kept connection, or None: check one out of the pool."""
        try:
            return self._idle.pop()
        except IndexError:
            return None

    def take_or_wait(self) -> PoolProxiedConnection | None:
        """Like :meth:`take`, but while the pool is full wait for a kept connection.

        None after the pool's own timeout: the pool then waits once more and
        raises its usual timeout error.
        """
        fairy = self.take()
        if fairy is not None or not self._enabled:
            return fairy
        deadline = time.monotonic() + self._timeout
        while not self._closed:
            if not self._pool_is_full() or time.monotonic() >= deadline:
                return None
            with self._kept:
                self._waiting += 1
                try:
                    if not self._idle:
                        self._kept.wait(_RECHECK_SECONDS)
                finally:
                    self._waiting -= 1
            fairy = self.take()
            if fairy is not None:
                return fairy
        return None

    def keep(self, fairy: PoolProxiedConnection) -> bool:
        """Keep ``fairy`` for the next call; False means the caller must close it."""
        if not self._enabled or self._closed or not fairy.is_valid:
            return False
        if not self._threads_wait_here and self._pool_is_full():
            return False  # a coroutine may be waiting in the pool for it
        self._idle.append(fairy)
        if self._waiting:
            with self._kept:
                self._kept.notify()
        if self._closed:  # closed meanwhile: unless drain() took it, hand it back
            try:
                self._idle.remove(fairy)
            except ValueError:
                return True
            return False
        return True

    def take_all(self) -> list[PoolProxiedConnection]:
        """Every kept connection, for the caller to close (give back to the pool)."""
        taken: list[PoolProxiedConnection] = []
        while True:
            fairy = self.take()
            if fairy is None:
                return taken
            taken.append(fairy)

    def drain(self) -> list[PoolProxiedConnection]:
        """Stop keeping connections; return the kept ones, for the caller to close."""
        self._closed = True
        drained = []
        while self._idle:
            drained.append(self._idle.pop())
        return drained
