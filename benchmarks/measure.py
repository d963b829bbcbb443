"""How the benchmarks measure: paired short chunks, ratios, and a quiet server.

Shared by ``bench_store.py`` and ``bench_drivers.py`` (and ``bench_durable.py``
through ``bench_store``). The method:

- the two sides of a comparison run in short alternating chunks (a, b, b, a,
  ...), so both see the same conditions on a small shared machine;
- each pair of neighbouring chunks gives one ratio, and a row reports the
  median of those ratios with its interquartile range (p25-p75);
- with a throwaway server, the client is pinned to one CPU and the server
  (whose backends inherit it) to another.

The sync helpers time callables; the ``a``-prefixed ones time coroutines
(``apaired``, ``atimed``, ``gathered``) the same way, inside one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

Timed = Callable[[], object]
AsyncTimed = Callable[[], Awaitable[object]]


# --- PostgreSQL plumbing ----------------------------------------------------------------


def conninfo_of(url: str) -> str:
    """The libpq URI for a SQLAlchemy PostgreSQL URL."""
    parsed = make_url(url)
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        sys.exit(f"this benchmark needs PostgreSQL, not {parsed.get_backend_name()!r}")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def raw_connect(conninfo: str) -> psycopg.Connection[Any]:
    return psycopg.connect(conninfo, autocommit=True)


def drop_table(admin: psycopg.Connection[Any], name: str) -> None:
    admin.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


# --- timing -----------------------------------------------------------------------------


def seconds(work: Timed) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


class Sample(NamedTuple):
    """Seconds of one measurement: wall clock, and CPU of this process (all threads)."""

    wall: float
    cpu: float


Measure = Callable[[], Sample]
AsyncMeasure = Callable[[], Awaitable[Sample]]


def timed(work: Timed) -> Measure:
    def measure() -> Sample:
        cpu, wall = time.process_time(), time.perf_counter()
        work()
        return Sample(time.perf_counter() - wall, time.process_time() - cpu)

    return measure


def atimed(work: AsyncTimed) -> AsyncMeasure:
    """:func:`timed` for a coroutine function."""

    async def measure() -> Sample:
        cpu, wall = time.process_time(), time.perf_counter()
        await work()
        return Sample(time.perf_counter() - wall, time.process_time() - cpu)

    return measure


@dataclass(frozen=True)
class Pairs:
    """What each side took, pair by pair (neighbours in time)."""

    store: list[Sample]
    other: list[Sample]

    def ratios(self) -> list[float]:
        """other time / store time: the store's speed relative to the other side."""
        return [o.wall / s.wall for s, o in zip(self.store, self.other, strict=True)]

    def wall(self) -> tuple[float, float]:
        """Median wall seconds of the store side and of the other side."""
        return median(x.wall for x in self.store), median(x.wall for x in self.other)

    def cpu(self) -> tuple[float, float]:
        return median(x.cpu for x in self.store), median(x.cpu for x in self.other)


def median(values: Iterable[float]) -> float:
    return float(statistics.median(values))


def paired(pairs: int, make: Callable[[], tuple[Measure, Measure]]) -> Pairs:
    """Run ``pairs`` pairs of measurements, alternating which side goes first.

    ``make`` builds one pair (its keys, its parameters) before either side is timed.
    """
    store: list[Sample] = []
    other: list[Sample] = []
    for i in range(pairs):
        left, right = make()
        if i % 2 == 0:
            store.append(left())
            other.append(right())
        else:
            other.append(right())
            store.append(left())
    return Pairs(store, other)


async def apaired(
    pairs: int, make: Callable[[], Awaitable[tuple[AsyncMeasure, AsyncMeasure]]]
) -> Pairs:
    """:func:`paired` for coroutine measurements (``make`` may await its set-up)."""
    store: list[Sample] = []
    other: list[Sample] = []
    for i in range(pairs):
        left, right = await make()
        if i % 2 == 0:
            store.append(await left())
            other.append(await right())
        else:
            other.append(await right())
            store.append(await left())
    return Pairs(store, other)


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def in_threads(workers: Sequence[Timed]) -> Measure:
    """Run every worker in its own thread, all released at once, until all finish."""

    def measure() -> Sample:
        barrier = threading.Barrier(len(workers) + 1)
        errors: list[BaseException] = []

        def body(work: Timed) -> None:
            barrier.wait()
            try:
                work()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=body, args=(w,)) for w in workers]
        for t in threads:
            t.start()
        barrier.wait()
        cpu, wall = time.process_time(), time.perf_counter()
        for t in threads:
            t.join()
        elapsed = Sample(time.perf_counter() - wall, time.process_time() - cpu)
        if errors:
            raise errors[0]
        return elapsed

    return measure


def gathered(workers: Sequence[AsyncTimed]) -> AsyncMeasure:
    """Run every worker as its own task, all started together, until all finish."""

    async def measure() -> Sample:
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(w() for w in workers))
        return Sample(time.perf_counter() - wall, time.process_time() - cpu)

    return measure


# --- keys and tables ----------------------------------------------------------------------


def keys(tag: str, count: int) -> list[str]:
    return [f"bench:{tag}:{i:07d}" for i in range(count)]


class Fresh:
    """Hands out key lists never used before in this run (for inserts and deletes)."""

    def __init__(self) -> None:
        self._serial = 0

    def __call__(self, tag: str, count: int) -> list[str]:
        self._serial += 1
        return keys(f"{tag}{self._serial}", count)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    print(f"\n{title}")
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


# --- the server ---------------------------------------------------------------------------


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from postgres_server import provide_postgres  # type: ignore[import-not-found, unused-ignore]

    with provide_postgres() as (provided, server):
        if server is not None and server.pid is not None:
            pin_client_and_server(server.pid)
        yield provided


def pin_client_and_server(postmaster_pid: int) -> None:
    """Client on one CPU, server (and the backends it forks later) on another.

    Otherwise where the scheduler puts each side's backend relative to the
    client moves a single-connection rate by up to 2x between runs, and the
    store and raw sides see different placements.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    os.sched_setaffinity(0, {cpus[0]})
    os.sched_setaffinity(postmaster_pid, {cpus[1]})
    print(f"pinned: client on CPU {cpus[0]}, PostgreSQL on CPU {cpus[1]}")
