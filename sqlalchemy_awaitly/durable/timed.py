"""Running one attempt of a step under its time limit: a thread (sync), a task (asyncio).

Python cannot stop a running function from outside. A sync attempt runs in a
thread of its own so the run can stop waiting for it; an asyncio attempt is a
task, cancelled on a timeout unless the step said ``"disconnect"``. Either
way, with ``signal=True`` the function gets an event set when it should stop.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Callable
from typing import Any

from .timeout import TimedOut, Timeout

_disconnected: set[asyncio.Future[Any]] = set()  # left running: referenced until they end


def call_with_limit(fn: Callable[..., Any], args: tuple[Any, ...], limit: Timeout) -> Any:
    """``fn(*args)`` in a thread; its result or exception, or :class:`TimedOut`."""
    stop = threading.Event()
    if limit.signal:
        args = (*args, stop)
    outcome: list[tuple[bool, Any]] = []
    context = contextvars.copy_context()

    def attempt() -> None:
        try:
            outcome.append((True, context.run(fn, *args)))
        except BaseException as e:  # handed to the run's thread, which raises it
            outcome.append((False, e))

    worker = threading.Thread(target=attempt, name="awaitly-step", daemon=True)
    worker.start()
    worker.join(limit.limit)
    if worker.is_alive():
        if limit.stops_the_work:
            stop.set()
        raise TimedOut()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


async def await_with_limit(fn: Callable[..., Any], args: tuple[Any, ...], limit: Timeout) -> Any:
    """``await fn(*args)`` as a task; its result or exception, or :class:`TimedOut`.

    A sync ``fn`` runs to its end where it is called, on the loop: only what it
    returns for awaiting is under the limit.
    """
    stop = asyncio.Event()
    if limit.signal:
        args = (*args, stop)
    result = fn(*args)
    if not inspect.isawaitable(result):
        return result
    task = asyncio.ensure_future(result)
    try:
        done, _ = await asyncio.wait({task}, timeout=limit.limit)
    except BaseException:  # the run itself was cancelled: so is its attempt
        task.cancel()
        raise
    if task in done:
        return task.result()
    if limit.stops_the_work:
        stop.set()
        task.cancel()
    else:
        _disconnected.add(task)
        task.add_done_callback(_forget)
    raise TimedOut()


def _forget(task: asyncio.Future[Any]) -> None:
    _disconnected.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning
