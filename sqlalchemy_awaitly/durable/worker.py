"""Recovery in a loop: a worker that resumes crashed runs as they appear.

Each poll lists the stored runs and queues the crashed ones it has not queued
yet; ``concurrency`` threads resume them (an ``async def`` workflow runs on one
event loop of the worker's own, on an asyncio store it makes there). Runs it cannot resume
(unknown type, not registered, resuming raised) are reported once and left
alone until the worker restarts; a run another process holds is skipped, its
lease decides. :meth:`Worker.stop` is a shutdown, not a cancellation: queued
runs are not started, running ones end before their next step, release their
lease and stay resumable.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from ..wire.documents import LOCK_PREFIX
from .drivers import SyncIO, drive, sync_backend
from .errors import DurableUsageError
from .helpers import list_pending
from .recovery import (
    Outcome,
    Recovery,
    Resumption,
    known_run,
    resumed,
    resumed_async,
)
from .registry import Registry
from .run_states import RunState
from .stopping import StopToken

log = logging.getLogger("sqlalchemy_awaitly.worker")

OnResumption = Callable[[Resumption], Any]


class AsyncStore(Protocol):
    """An asyncio store (or persistence) the worker closes when it stops."""

    async def close(self) -> None: ...


LEFT_ALONE = (Outcome.UNKNOWN, Outcome.UNREGISTERED, Outcome.ERROR)


class Worker:
    """Resume the crashed runs of ``registry``'s workflows on ``store``, every
    ``poll_interval`` seconds, ``concurrency`` at a time, until :meth:`stop`.

    ``async_store`` makes an asyncio store on the same table for ``async def``
    workflows (called on the worker's event loop, closed when it stops);
    ``on_resumption`` hears of each run's outcome (from the worker's threads);
    ``options`` are ``durable.run``'s for each resumed run.
    """

    def __init__(
        self,
        store: object,
        registry: Registry,
        *,
        async_store: Callable[[], AsyncStore] | None = None,
        concurrency: int = 4,
        poll_interval: float = 5.0,
        state_prefix: str | None = None,
        lock_prefix: str = LOCK_PREFIX,
        on_resumption: OnResumption | None = None,
        **options: Any,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise DurableUsageError(f"concurrency must be a positive int, got {concurrency!r}")
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)):
            raise DurableUsageError(f"poll_interval must be seconds, got {poll_interval!r}")
        if not poll_interval > 0:
            raise DurableUsageError(f"poll_interval must be positive, got {poll_interval!r}")
        if "stop" in options:
            raise DurableUsageError("the worker stops its runs itself: call Worker.stop()")
        self.store, self.registry, self.make_async_store = store, registry, async_store
        self.concurrency, self.poll_interval = concurrency, float(poll_interval)
        self.state_prefix, self.lock_prefix = state_prefix, lock_prefix
        self.on_resumption = on_resumption
        self.options = options
        self.totals = Recovery()
        self._backend = sync_backend(store, state_prefix)
        self._token = StopToken()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._queued: set[str] = set()
        self._left: set[str] = set()  # reported once, not tried again
        # Runs this worker ended while a listing was being read: the listing may
        # still show them as crashed (their row read before they ended).
        self._ended_while_listing: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_store: AsyncStore | None = None

    @property
    def running(self) -> int:
        """Runs queued or being resumed."""
        with self._lock:
            return len(self._queued)

    def stop(self) -> None:
        """Stop polling; queued runs are not started, running ones end before their
        next step (resumable). Safe from a signal handler and from any thread."""
        self._stopping.set()
        self._token.stop()

    def run(self) -> Recovery:
        """Poll and resume until :meth:`stop`; returns once no run is left running."""
        loop = self._start_loop() if self.make_async_store is not None else None
        try:
            with ThreadPoolExecutor(self.concurrency, "awaitly-worker") as pool:
                while not self._stopping.is_set():
                    self.poll(pool)
                    self._stopping.wait(self.poll_interval)
                pool.shutdown(wait=True, cancel_futures=True)
        finally:
            if loop is not None:
                self._stop_loop(loop)
        return self.totals

    def poll(self, pool: ThreadPoolExecutor) -> int:
        """List the stored runs once and queue the crashed ones not queued or left
        alone; how many were queued. A listing that fails is logged and retried at
        the next poll."""
        with self._lock:
            self._ended_while_listing.clear()
        try:
            runs = list_pending(
                self.store, state_prefix=self.state_prefix, lock_prefix=self.lock_prefix
            )
        except Exception as e:
            log.warning("could not list the stored runs (%s); trying again", type(e).__name__)
            return 0
        with self._lock:
            known = self._queued | self._left | self._ended_while_listing
            new = [r.id for r in runs if r.state is RunState.CRASHED and r.id not in known]
            self._queued.update(new)
        for workflow_id in new:
            pool.submit(self._resume, workflow_id)
        return len(new)

    def _resume(self, workflow_id: str) -> None:
        try:
            if self._stopping.is_set():
                return  # queued before the stop: not started
            try:
                done = self._resumed(workflow_id)
            except Exception as e:
                log.exception("resuming %r raised", workflow_id)
                done = Resumption(workflow_id, Outcome.ERROR, detail=f"{type(e).__name__}: {e}")
            with self._lock:
                self.totals.add(done)
                if done.outcome in LEFT_ALONE:
                    self._left.add(workflow_id)
            if self.on_resumption is not None:
                try:
                    self.on_resumption(done)
                except Exception:  # a reporting bug must not stop the worker's thread
                    log.exception("on_resumption raised for %r", workflow_id)
        finally:
            with self._lock:
                self._queued.discard(workflow_id)
                self._ended_while_listing.add(workflow_id)

    def _resumed(self, workflow_id: str) -> Resumption:
        io = SyncIO(self._backend)
        known = drive(known_run(self.registry, self._backend.prefix, workflow_id), io)
        if isinstance(known, Resumption):
            return known
        entry, input_value = known
        options = {**self.options, "stop": self._token}
        place = (self.state_prefix, self.lock_prefix, options)
        if not entry.is_async:
            return resumed(entry, input_value, workflow_id, self.store, *place)
        if self._loop is None:
            raise DurableUsageError(
                f"workflow {entry.type!r} is async: give the Worker an async_store factory"
            )
        run = resumed_async(entry, input_value, workflow_id, self._async_store, *place)
        return asyncio.run_coroutine_threadsafe(run, self._loop).result()

    def _start_loop(self) -> threading.Thread:
        """The event loop the asyncio workflows run on, with the asyncio store made
        on it (one loop: an AsyncEngine's connections belong to the loop that made
        them)."""
        assert self.make_async_store is not None
        make = self.make_async_store
        loop = self._loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="awaitly-worker-loop", daemon=True)
        thread.start()

        async def made() -> AsyncStore:
            return make()

        self._async_store = asyncio.run_coroutine_threadsafe(made(), loop).result()
        return thread

    def _stop_loop(self, thread: threading.Thread) -> None:
        loop = self._loop
        assert loop is not None
        try:
            if self._async_store is not None:
                asyncio.run_coroutine_threadsafe(self._async_store.close(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
