"""A parallel group's members running side by side: threads for a sync run, tasks for
an asyncio one. The group's plan (``groups.py``) decides what each ending means;
these only start the members, hand back each one's ending, and stop waiting.

Endings are handed back one at a time; of several that ended together, the one
listed first goes first, so a group's course does not depend on thread timing
more than it must.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from .errors import DurableUsageError

Members = Sequence[tuple[str, Callable[[], Any]]]
Ending = tuple[str, Any, BaseException | None]  # member id, its answer, or what it raised


def _called_in_thread(fn: Callable[[], Any]) -> Any:
    result = fn()
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise DurableUsageError(
            f"{fn!r} returned an awaitable: use durable.run_async for async code"
        )
    return result


class ThreadGroup:
    """A sync run's group: each member in a thread, at most ``limit`` at a time."""

    def __init__(self, members: Members, limit: int | None) -> None:
        workers = max(1, min(limit or len(members), len(members)))
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="sqlalchemy-awaitly")
        self._pending: dict[Future[Any], tuple[int, str]] = {}
        for index, (member, fn) in enumerate(members):
            # In the run's context, as a task would be: a member's spans nest under its step.
            future = self._executor.submit(contextvars.copy_context().run, _called_in_thread, fn)
            self._pending[future] = (index, member)

    def next_done(self) -> Ending:
        if not self._pending:
            raise DurableUsageError("a group has no member left to wait for")
        done, _ = wait(self._pending, return_when=FIRST_COMPLETED)
        future = min(done, key=lambda f: self._pending[f][0])
        _, member = self._pending.pop(future)
        error = future.exception()
        return (member, None, error) if error is not None else (member, future.result(), None)

    def abandon(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._pending.clear()


async def _settled(fn: Callable[[], Any], gate: asyncio.Semaphore | None) -> Any:
    if gate is None:
        result = fn()
        return await result if inspect.isawaitable(result) else result
    async with gate:
        result = fn()
        return await result if inspect.isawaitable(result) else result


class TaskGroup:
    """An asyncio run's group: each member a task, at most ``limit`` running at a time.

    A sync member function runs in its task, on the event loop: members run side by
    side while they await.
    """

    def __init__(self, members: Members, limit: int | None) -> None:
        gate = asyncio.Semaphore(limit) if limit else None
        self._pending: dict[asyncio.Future[Any], tuple[int, str]] = {}
        for index, (member, fn) in enumerate(members):
            task = asyncio.ensure_future(_settled(fn, gate))
            self._pending[task] = (index, member)

    async def next_done(self) -> Ending:
        if not self._pending:
            raise DurableUsageError("a group has no member left to wait for")
        done, _ = await asyncio.wait(self._pending, return_when=asyncio.FIRST_COMPLETED)
        task = min(done, key=lambda t: self._pending[t][0])
        _, member = self._pending.pop(task)
        if task.cancelled():
            return member, None, asyncio.CancelledError()
        error = task.exception()
        return (member, None, error) if error is not None else (member, task.result(), None)

    async def abandon(self) -> None:
        """Cancel the members still running and wait until they have ended."""
        tasks = list(self._pending)
        self._pending.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
