"""Benchmark the store on each driver against that driver used raw, with the same SQL.

One table, one row per comparison. Every row runs the two sides in short
alternating chunks and reports the median of the per-pair ratios with its
interquartile range (see ``measure.py``); the baseline always sends the SQL
text the store sends for that driver (compiled from the store's own
statements with the driver's dialect), with the same parameters.

1. ``postgresql+psycopg2``, a caller's engine (``SQLAlchemyKeyValueStore(engine=e)``):
   get, set, exists, delete; one caller, and 8 threads (pool_size 8). Baseline:
   the same kind of engine, ``e.raw_connection()`` per call, autocommit on
   that connection, a cursor, execute, fetch, autocommit back off, close the
   proxy. Target >= 0.8.
2. ``postgresql+asyncpg``, a caller's AsyncEngine (``AsyncSQLAlchemyKeyValueStore(engine=e)``):
   get, set, exists, delete; one task, and 50 tasks over pool_size 10.
   Baseline: ``await e.raw_connection()`` per call, the asyncpg connection's
   ``fetch`` / ``execute`` with the ``$n`` SQL, the proxy closed under
   ``greenlet_spawn``. Target >= 0.8.
3. The store's own async engine, 50 tasks over 10 connections, get and set,
   on ``postgresql+psycopg`` (async) and ``postgresql+asyncpg``. Baseline: 10
   dedicated raw connections shared by the 50 tasks through an asyncio.Queue,
   each driver at its defaults (psycopg prepares a statement on its 5th run,
   asyncpg on its first; the store runs psycopg's statements by name, which
   the server also plans once). Target >= 0.8.
4. A SQLite file, the store's own engine, get and set: sync against sqlite3 on
   a dedicated autocommit connection with the same pragmas, async (aiosqlite)
   against aiosqlite on a dedicated connection. Target >= 0.5.
5. ``purge_expired()`` (defaults) against one ``DELETE ... WHERE expires_at <
   now()``, psycopg 3, half of N rows expired: rows/s, and the purge's batch
   durations (max, p95). Target >= 0.8.
6. ``durable.run`` of 10 and of 100 trivial steps through
   ``create_state_persistence(store)`` against the store's ``set`` of the same
   snapshots in the same order: time ratio, lower is better. Targets <= 1.5
   (10 steps) and <= 1.2 (100 steps). With the store's default (statements
   run by name, planned once per server session: safe behind any PgBouncer),
   with ``prepare_threshold=5`` (psycopg's prepared statements), and with
   ``prepare_threshold=None`` (nothing prepared: a checkpoint's fenced upsert
   then costs about 0.1 ms more to plan than a plain one); and the default on
   ``postgresql+psycopg2``. Each is followed by
   its floor: the run's store calls
   replayed with no runner, what the SQL alone costs; and preceded by what
   the fence costs: one checkpoint's ``set_guarded`` against ``set`` of the
   same text (no target: it explains the floor).

Run from the project root::

    .venv/bin/python benchmarks/bench_drivers.py            # full, about 4 minutes
    .venv/bin/python benchmarks/bench_drivers.py --quick    # about 2 minutes
    .venv/bin/python benchmarks/bench_drivers.py --only sqlite purge
    .venv/bin/python benchmarks/bench_drivers.py --url postgresql://user@host/db

Without ``--url`` it starts a throwaway server (``tests/postgres_server.py``)
and pins client and server to different CPUs. It creates, and drops at the
end, the tables ``bench_drivers_kv`` and ``bench_drivers_purge`` (an existing
table of either name is dropped first); the SQLite rows use a temporary file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import asyncpg  # type: ignore[import-untyped, unused-ignore]
import psycopg
import psycopg2  # type: ignore[import-untyped, unused-ignore]
import sqlalchemy
from measure import (
    AsyncMeasure,
    AsyncTimed,
    Fresh,
    Measure,
    Pairs,
    Sample,
    Timed,
    apaired,
    atimed,
    conninfo_of,
    database,
    drop_table,
    gathered,
    in_threads,
    keys,
    paired,
    print_table,
    quartiles,
    raw_connect,
    seconds,
    timed,
)
from psycopg import sql
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.util import greenlet_spawn

from sqlalchemy_awaitly import (
    AsyncSQLAlchemyKeyValueStore,
    SQLAlchemyKeyValueStore,
    create_state_persistence,
    durable,
)
from sqlalchemy_awaitly.durable import MemoryStore
from sqlalchemy_awaitly.execution import compile_ops

TABLE = "bench_drivers_kv"
PURGE_TABLE = "bench_drivers_purge"
VALUE = '{"status": "running", "step": 7, "data": "' + "x" * 200 + '"}'
HITS = 2_000  # keys present for the reads
THREADS = 8
TASKS = 50
ASYNC_POOL = 10
PG_TARGET = 0.8
SQLITE_TARGET = 0.5
PURGE_TARGET = 0.8
DURABLE_TARGETS = {10: 1.5, 100: 1.2}  # time ratios: at most
SQLITE_PRAGMAS = ("journal_mode", "synchronous", "busy_timeout")

GROUPS = {
    "psycopg2": "1",
    "asyncpg": "2",
    "async-pool": "3",
    "sqlite": "4",
    "purge": "5",
    "durable": "6",
}

T = TypeVar("T")
Params = Mapping[str, Any]
Args = Mapping[str, Any] | tuple[Any, ...]


@dataclass(frozen=True)
class Settings:
    """How much work each row does; ``--quick`` shrinks everything."""

    pairs: int  # chunk pairs per rate row
    chunk: float  # seconds one side of one chunk should take (sets the ops per chunk)
    min_ops: int  # at least this many calls per worker per chunk
    purge_rows: int  # N, half of them expired
    purge_pairs: int
    durable_pairs: int


FULL = Settings(
    pairs=40,
    chunk=0.1,
    min_ops=5,
    purge_rows=400_000,
    purge_pairs=4,
    durable_pairs=20,
)
QUICK = Settings(
    pairs=16,
    chunk=0.05,
    min_ops=3,
    purge_rows=40_000,
    purge_pairs=3,
    durable_pairs=6,
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


FOOTNOTES: dict[str, str] = {}  # marker -> text, printed under the table


def footnote(text: str) -> str:
    """A marker for ``text`` (the same text gets the same marker)."""
    for marker, known in FOOTNOTES.items():
        if known == text:
            return marker
    marker = f"[{chr(ord('a') + len(FOOTNOTES))}]"
    FOOTNOTES[marker] = text
    return marker


# --- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One row of the table: both sides, the median paired ratio and its quartiles."""

    label: str
    store: str
    baseline: str
    q1: float
    ratio: float
    q3: float
    target: float
    lower_is_better: bool = False
    note: str = ""
    failed: bool = False  # the row could not be measured; ``note`` says why

    @property
    def meets(self) -> bool:
        if self.failed:
            return False
        if math.isnan(self.target):  # a row that explains another: no target of its own
            return True
        return self.ratio <= self.target if self.lower_is_better else self.ratio >= self.target

    def cells(self) -> list[str]:
        if self.failed:
            target = "" if math.isnan(self.target) else self.shown_target
            return [self.label, "-", "-", "-", "-", target, "error", self.note]
        return [
            self.label,
            self.store,
            self.baseline,
            f"{self.ratio:.2f}",
            f"{self.q1:.2f}-{self.q3:.2f}",
            self.shown_target,
            "-" if math.isnan(self.target) else "meets" if self.meets else "below",
            self.note,
        ]

    @property
    def shown_target(self) -> str:
        if math.isnan(self.target):
            return "-"
        return f"{'<=' if self.lower_is_better else '>='} {self.target:.2f}"


def failure(label: str, error: BaseException, target: float = math.nan) -> Result:
    """A row that could not be measured (the traceback goes to stderr)."""
    log(f"  {label}: failed")
    traceback.print_exception(error, file=sys.stderr)
    nan = math.nan
    note = footnote(text_of(error))
    return Result(label, "", "", nan, nan, nan, target, note=note, failed=True)


def text_of(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


HEADERS = ["row", "store", "baseline", "store/baseline", "p25-p75", "target", "verdict", "notes"]


def rate_result(label: str, ops: int, pairs: Pairs, target: float, note: str) -> Result:
    """ops/s of each side (median chunk) and the paired speed ratio store/baseline."""
    q1, ratio, q3 = quartiles(pairs.ratios())
    store_s, base_s = pairs.wall()
    store_cpu, base_cpu = pairs.cpu()
    cpu = f"CPU {store_cpu / ops * 1e6:.0f}/{base_cpu / ops * 1e6:.0f} us/op"
    return Result(
        label,
        f"{ops / store_s:,.0f} ops/s",
        f"{ops / base_s:,.0f} ops/s",
        q1,
        ratio,
        q3,
        target,
        note=f"{note}; {cpu}" if note else cpu,
    )


# --- the store's SQL, as each driver takes it ---------------------------------------------


@dataclass(frozen=True)
class Sql:
    """A statement's text for one driver; ``names`` orders a positional paramstyle's values."""

    text: str
    names: tuple[str, ...] | None

    def args(self, params: Params) -> Args:
        return params if self.names is None else tuple(params[n] for n in self.names)


def driver_sql(
    store: SQLAlchemyKeyValueStore | AsyncSQLAlchemyKeyValueStore, dialect: Dialect
) -> dict[str, Sql]:
    """The store's statements (set up first) compiled for ``dialect``, by operation name.

    The same compilation the store does, or SQLAlchemy does for it on a Connection:
    pyformat for psycopg and psycopg2, ``$n`` for asyncpg, ``?`` for SQLite.
    """
    statements = store._statements
    assert statements is not None, "set the store up first"
    out: dict[str, Sql] = {}
    for op in (statements.by_name[name] for name in FETCHES):
        compiled: Any = cast(ClauseElement, op.statement).compile(dialect=dialect)
        fixed = {k: v for k, v in compiled.params.items() if v is not None}
        assert not fixed, f"{op.name}: the baseline passes no fixed parameters"
        positional = compiled.positional and compiled.positiontup
        out[op.name] = Sql(compiled.string, tuple(compiled.positiontup) if positional else None)
    # what the store's direct runners send: the same compilation, done by the store
    sent = {c.op.name: c.sql for c in compile_ops(statements, dialect).values()}
    for name, query in out.items():
        assert query.text == sent[name], (name, query.text, sent[name])
    return out


@contextlib.contextmanager
def statements_sent(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """What goes through SQLAlchemy's cursor execution on ``engine`` meanwhile (if anything)."""
    seen: list[tuple[str, Any]] = []

    def listen(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listen)


def path_of(seen: list[tuple[str, Any]], query: Sql, params: Params) -> str:
    """``Connection`` if the store's call went through SQLAlchemy's execution (and then
    checks it sent exactly the baseline's SQL and values), else ``direct``."""
    if not seen:
        return "direct"
    statement, sent = seen[-1]
    if statement != query.text:
        raise RuntimeError(f"the store sent {statement!r}, the baseline sends {query.text!r}")
    mine = query.args(params)
    same = dict(sent) == dict(mine) if isinstance(mine, Mapping) else tuple(sent) == mine
    if not same:
        raise RuntimeError(f"the store sent {sent!r}, the baseline {mine!r} for {query.text!r}")
    return "Connection"


# --- keys -------------------------------------------------------------------------------


class Names:
    """Keys for one chunk of one worker: hits to read, new keys to set, live keys to delete."""

    def __init__(self, fresh: Fresh, seed: Callable[[list[str]], None] | None = None) -> None:
        self.hits = keys("hit", HITS)
        self._fresh = fresh
        self._seed = seed
        self._at = 0

    def reads(self, count: int) -> list[str]:
        start, self._at = self._at, self._at + 997
        return [self.hits[(start + i) % HITS] for i in range(count)]

    def new(self, count: int) -> list[str]:
        return self._fresh("set", count)

    def live(self, count: int) -> list[str]:
        """Keys inserted now (untimed) for deletes to remove."""
        names = self._fresh("del", count)
        assert self._seed is not None
        self._seed(names)
        return names

    def of(self, op: str) -> Callable[[int], list[str]]:
        return {"get": self.reads, "exists": self.reads, "set": self.new, "delete": self.live}[op]


def params_of(op: str, name: str) -> dict[str, Any]:
    if op == "set":
        return {"key": name, "value": VALUE, "ttl": None}
    return {"key": name}


FETCHES = {"get": True, "exists": True, "set": False, "delete": True}


def seed_pg(admin: psycopg.Connection[Any], table: str) -> Callable[[list[str]], None]:
    query = sql.SQL("INSERT INTO {} (key, value) SELECT unnest(%s::text[]), %s").format(
        sql.Identifier(table)
    )

    def seed(names: list[str]) -> None:
        admin.execute(query, (names, VALUE))

    return seed


# --- chunk sizing and the two row runners -----------------------------------------------------


def per_worker(pairs: Pairs, probe: int, workers: int, s: Settings) -> int:
    """Calls per worker per chunk so that the slower side's chunk takes about ``s.chunk``."""
    slower = max(pairs.wall())
    wanted = math.ceil(s.chunk / slower * probe)
    return max(s.min_ops, min(wanted, 20_000 // workers))


def loop(call: Callable[[T], object], items: Sequence[T]) -> Timed:
    def run() -> None:
        for item in items:
            call(item)

    return run


def aloop(call: Callable[[T], Awaitable[object]], items: Sequence[T]) -> AsyncTimed:
    async def run() -> None:
        for item in items:
            await call(item)

    return run


@dataclass(frozen=True)
class SyncRow:
    label: str
    op: str
    workers: int
    store_call: Callable[[str], object]
    raw_call: Callable[[Args], object]
    query: Sql
    names: Callable[[int], list[str]]
    target: float
    engine: Engine  # the store's: to see which way its call went
    note: str = ""


def run_sync(row: SyncRow, s: Settings) -> Result:
    try:
        return measure_sync(row, s)
    except Exception as e:
        return failure(row.label, e, row.target)


def measure_sync(row: SyncRow, s: Settings) -> Result:
    check = row.names(1)[0]
    with statements_sent(row.engine) as seen:
        row.store_call(check)
    path = ", ".join(filter(None, [path_of(seen, row.query, params_of(row.op, check)), row.note]))

    def make(per: int) -> tuple[Measure, Measure]:
        store_lists = [row.names(per) for _ in range(row.workers)]
        raw_lists = [
            [row.query.args(params_of(row.op, n)) for n in row.names(per)]
            for _ in range(row.workers)
        ]
        store_work = [loop(row.store_call, names) for names in store_lists]
        raw_work = [loop(row.raw_call, args) for args in raw_lists]
        if row.workers == 1:
            return timed(store_work[0]), timed(raw_work[0])
        return in_threads(store_work), in_threads(raw_work)

    probe = max(s.min_ops, 10)
    paired(1, lambda: make(probe))  # warm-up: fills both pools
    per = per_worker(paired(2, lambda: make(probe)), probe, row.workers, s)
    result = rate_result(
        row.label, per * row.workers, paired(s.pairs, lambda: make(per)), row.target, path
    )
    log(f"  {row.label}: {result.ratio:.2f}")
    return result


@dataclass(frozen=True)
class AsyncRow:
    label: str
    op: str
    workers: int
    store_call: Callable[[str], Awaitable[object]]
    raw_call: Callable[[Args], Awaitable[object]]
    query: Sql
    names: Callable[[int], list[str]]
    target: float
    engine: AsyncEngine  # the store's
    note: str = ""


async def run_async(row: AsyncRow, s: Settings) -> Result:
    try:
        return await measure_async(row, s)
    except Exception as e:
        return failure(row.label, e, row.target)


async def measure_async(row: AsyncRow, s: Settings) -> Result:
    check = row.names(1)[0]
    with statements_sent(row.engine.sync_engine) as seen:
        await row.store_call(check)
    path = ", ".join(filter(None, [path_of(seen, row.query, params_of(row.op, check)), row.note]))

    async def make(per: int) -> tuple[AsyncMeasure, AsyncMeasure]:
        store_lists = [row.names(per) for _ in range(row.workers)]
        raw_lists = [
            [row.query.args(params_of(row.op, n)) for n in row.names(per)]
            for _ in range(row.workers)
        ]
        store_work = [aloop(row.store_call, names) for names in store_lists]
        raw_work = [aloop(row.raw_call, args) for args in raw_lists]
        if row.workers == 1:
            return atimed(store_work[0]), atimed(raw_work[0])
        return gathered(store_work), gathered(raw_work)

    probe = max(s.min_ops, 10)
    await apaired(1, lambda: make(probe))
    per = per_worker(await apaired(2, lambda: make(probe)), probe, row.workers, s)
    pairs = await apaired(s.pairs, lambda: make(per))
    result = rate_result(row.label, per * row.workers, pairs, row.target, path)
    log(f"  {row.label}: {result.ratio:.2f}")
    return result


# --- 1. a caller's psycopg2 engine --------------------------------------------------------------


def psycopg2_raw(engine: Engine, query: Sql, fetch: bool) -> Callable[[Args], object]:
    """One call as raw psycopg2 through the pool: autocommit for the call, then back."""

    def call(args: Args) -> object:
        proxy = engine.raw_connection()
        try:
            conn = proxy.driver_connection
            assert conn is not None
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    cur.execute(query.text, args)
                    return cur.fetchall() if fetch else None
            finally:
                conn.autocommit = False
        finally:
            proxy.close()

    return call


def group_psycopg2(
    url: str, s: Settings, fresh: Fresh, admin: psycopg.Connection[Any]
) -> list[Result]:
    target = url_for(url, "psycopg2")
    pool = {"pool_size": THREADS, "max_overflow": 0}
    mine, theirs = create_engine(target, **pool), create_engine(target, **pool)
    try:
        store = SQLAlchemyKeyValueStore(engine=mine, table_name=TABLE)
        store.setup()
        queries = driver_sql(store, mine.dialect)
        names = Names(fresh, seed_pg(admin, TABLE))
        calls: dict[str, Callable[[str], object]] = {
            "get": store.get,
            "set": lambda k: store.set(k, VALUE),
            "exists": store.exists,
            "delete": store.delete,
        }
        rows = []
        for workers in (1, THREADS):
            who = "1 caller" if workers == 1 else f"{THREADS} threads"
            for op in ("get", "set", "exists", "delete"):
                rows.append(
                    run_sync(
                        SyncRow(
                            f"1 psycopg2 caller's engine: {op}, {who}",
                            op,
                            workers,
                            calls[op],
                            psycopg2_raw(theirs, queries[op], FETCHES[op]),
                            queries[op],
                            names.of(op),
                            PG_TARGET,
                            mine,
                        ),
                        s,
                    )
                )
        store.close()
        return rows
    finally:
        mine.dispose()
        theirs.dispose()


# --- 2. a caller's asyncpg AsyncEngine --------------------------------------------------


def asyncpg_raw(
    engine: AsyncEngine, query: Sql, fetch: bool
) -> Callable[[Args], Awaitable[object]]:
    """One call as raw asyncpg through the pool; the proxy goes back under greenlet_spawn
    (its return may await the driver: a reset, closing an overflow connection)."""

    async def call(args: Args) -> object:
        proxy = await engine.raw_connection()
        try:
            conn = proxy.driver_connection
            assert conn is not None
            if fetch:
                return await conn.fetch(query.text, *args)
            return await conn.execute(query.text, *args)
        finally:
            await greenlet_spawn(proxy.close)

    return call


async def group_asyncpg(
    url: str, s: Settings, fresh: Fresh, admin: psycopg.Connection[Any]
) -> list[Result]:
    target = url_for(url, "asyncpg")
    pool = {"pool_size": ASYNC_POOL, "max_overflow": 0}
    mine, theirs = create_async_engine(target, **pool), create_async_engine(target, **pool)
    try:
        store = AsyncSQLAlchemyKeyValueStore(engine=mine, table_name=TABLE)
        await store.setup()
        queries = driver_sql(store, mine.dialect)
        names = Names(fresh, seed_pg(admin, TABLE))

        async def put(key: str) -> None:
            await store.set(key, VALUE)

        calls: dict[str, Callable[[str], Awaitable[object]]] = {
            "get": store.get,
            "set": put,
            "exists": store.exists,
            "delete": store.delete,
        }
        rows = []
        for workers in (1, TASKS):
            who = "1 task" if workers == 1 else f"{TASKS} tasks, pool {ASYNC_POOL}"
            for op in ("get", "set", "exists", "delete"):
                row = AsyncRow(
                    f"2 asyncpg caller's AsyncEngine: {op}, {who}",
                    op,
                    workers,
                    calls[op],
                    asyncpg_raw(theirs, queries[op], FETCHES[op]),
                    queries[op],
                    names.of(op),
                    PG_TARGET,
                    mine,
                )
                rows.append(await run_async(row, s))
        await store.close()
        return rows
    finally:
        await mine.dispose()
        await theirs.dispose()


# --- 3. the store's own async engine, 50 tasks over 10 connections ----------------------


def queued(
    conns: asyncio.Queue[Any], send: Callable[[Any, Args], Awaitable[object]]
) -> Callable[[Args], Awaitable[object]]:
    """One call on whichever dedicated connection is free (waiting in line for one)."""

    async def call(args: Args) -> object:
        conn = await conns.get()
        try:
            return await send(conn, args)
        finally:
            conns.put_nowait(conn)

    return call


async def group_async_pool(url: str, s: Settings, fresh: Fresh) -> list[Result]:
    rows = []
    for driver in ("psycopg", "asyncpg"):
        rows += await async_pool_rows(url, driver, s, fresh)
    return rows


async def own_async_store(
    url: str, pool: dict[str, Any]
) -> tuple[AsyncSQLAlchemyKeyValueStore, AsyncEngine | None, str]:
    """The store on its own engine; if that engine cannot connect (seen: asyncpg refusing
    the ``connect_timeout`` the store adds), the store on an engine built with the same
    arguments (``timeout`` for asyncpg), which the caller disposes; and a note saying so."""
    store = AsyncSQLAlchemyKeyValueStore(url, table_name=TABLE, pool=pool)
    try:
        await store.setup()
        return store, None, ""
    except Exception as e:
        await store.close()
        why = text_of(e)
    log(f"  the store's own engine failed ({why}); using one built like it")
    connect_args = {"timeout": 10} if make_url(url).get_driver_name() == "asyncpg" else {}
    engine = create_async_engine(
        url,
        **pool,
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
        connect_args=connect_args,
    )
    store = AsyncSQLAlchemyKeyValueStore(engine=engine, table_name=TABLE)
    await store.setup()
    return (
        store,
        engine,
        footnote(
            f"the store's own engine for {url.split(':', 1)[0]} cannot connect ({why}); "
            "measured on engine= built with the same arguments (asyncpg: timeout=10 instead)"
        ),
    )


async def async_pool_rows(url: str, driver: str, s: Settings, fresh: Fresh) -> list[Result]:
    conninfo = conninfo_of(url)
    pool = {"pool_size": ASYNC_POOL, "max_overflow": 0}
    store, stand_in, note = await own_async_store(url_for(url, driver), pool)
    queries = driver_sql(store, store.engine.dialect)
    names = Names(fresh)
    line: asyncio.Queue[Any] = asyncio.Queue()
    opened: list[Any] = []

    async def put(key: str) -> None:
        await store.set(key, VALUE)

    calls: dict[str, Callable[[str], Awaitable[object]]] = {"get": store.get, "set": put}
    rows = []
    try:
        for _ in range(ASYNC_POOL):
            if driver == "psycopg":  # autocommit; psycopg's own prepare_threshold (5): the
                # server plans each statement once, as it does the store's statements by name
                conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                opened.append(conn)
                line.put_nowait((conn, conn.cursor()))
            else:
                opened.append(conn := await asyncpg.connect(conninfo))
                line.put_nowait(conn)
        for op in ("get", "set"):
            query, fetch = queries[op], FETCHES[op]
            send = psycopg_send(query, fetch) if driver == "psycopg" else asyncpg_send(query, fetch)
            row = AsyncRow(
                f"3 own async engine, {driver}: {op}, {TASKS} tasks / {ASYNC_POOL} conns",
                op,
                TASKS,
                calls[op],
                queued(line, send),
                query,
                names.of(op),
                PG_TARGET,
                store.engine,
                note,
            )
            rows.append(await run_async(row, s))
    finally:
        for conn in opened:
            await conn.close()
        await store.close()
        if stand_in is not None:
            await stand_in.dispose()
    return rows


def psycopg_send(query: Sql, fetch: bool) -> Callable[[Any, Args], Awaitable[object]]:
    async def send(held: Any, args: Args) -> object:
        _, cur = held
        await cur.execute(query.text, args)
        return await cur.fetchall() if fetch else None

    return send


def asyncpg_send(query: Sql, fetch: bool) -> Callable[[Any, Args], Awaitable[object]]:
    async def send(conn: Any, args: Args) -> object:
        if fetch:
            return await conn.fetch(query.text, *args)
        return await conn.execute(query.text, *args)

    return send


# --- 4. SQLite --------------------------------------------------------------------------------


def pragmas(conn: sqlite3.Connection) -> str:
    values = {p: conn.execute(f"PRAGMA {p}").fetchone()[0] for p in SQLITE_PRAGMAS}
    return ", ".join(f"{k}={v}" for k, v in values.items())


async def apragmas(conn: Any) -> str:
    values = {p: (await conn.execute_fetchall(f"PRAGMA {p}"))[0][0] for p in SQLITE_PRAGMAS}
    return ", ".join(f"{k}={v}" for k, v in values.items())


def group_sqlite_sync(path: Path, s: Settings, fresh: Fresh) -> tuple[list[Result], str]:
    """The store's own sync engine against sqlite3; returns the rows and the pragmas."""
    store = SQLAlchemyKeyValueStore(f"sqlite:///{path}", table_name=TABLE)
    store.setup()
    # the store's pooled connection: what it runs with
    proxy = store.engine.raw_connection()
    try:
        conn = proxy.driver_connection
        assert isinstance(conn, sqlite3.Connection)
        theirs = pragmas(conn)
    finally:
        proxy.close()
    # as the store's engine connects (SQLAlchemy's arguments), in autocommit
    args, kwargs = store.engine.dialect.create_connect_args(store.engine.url)
    connect: Callable[..., sqlite3.Connection] = sqlite3.connect
    raw = connect(*args, **{**kwargs, "isolation_level": None})
    try:
        mine = pragmas(raw)
        if mine != theirs:
            sys.exit(f"sqlite3 pragmas differ: store {theirs}, raw {mine}")
        queries = driver_sql(store, store.engine.dialect)
        raw.executemany(
            queries["set"].text,
            [queries["set"].args(params_of("set", k)) for k in keys("hit", HITS)],
        )
        names = Names(fresh)
        cur = raw.cursor()

        def raw_call(query: Sql, fetch: bool) -> Callable[[Args], object]:
            def call(args: Args) -> object:
                cur.execute(query.text, args)
                return cur.fetchall() if fetch else None

            return call

        calls: dict[str, Callable[[str], object]] = {
            "get": store.get,
            "set": lambda k: store.set(k, VALUE),
        }
        rows = [
            run_sync(
                SyncRow(
                    f"4 sqlite3, own engine: {op}",
                    op,
                    1,
                    calls[op],
                    raw_call(queries[op], FETCHES[op]),
                    queries[op],
                    names.of(op),
                    SQLITE_TARGET,
                    store.engine,
                ),
                s,
            )
            for op in ("get", "set")
        ]
    finally:
        raw.close()
        store.close()
    return rows, theirs


async def group_sqlite_async(path: Path, s: Settings, fresh: Fresh, expected: str) -> list[Result]:
    """The store's own aiosqlite engine against aiosqlite on a dedicated connection."""
    store = AsyncSQLAlchemyKeyValueStore(f"sqlite:///{path}", table_name=TABLE)
    await store.setup()
    queries = driver_sql(store, store.engine.dialect)
    proxy = await store.engine.raw_connection()
    try:
        theirs = await apragmas(proxy.driver_connection)
    finally:
        await greenlet_spawn(proxy.close)
    args, kwargs = store.engine.dialect.create_connect_args(store.engine.url)
    raw = await aiosqlite.connect(*args, **{**kwargs, "isolation_level": None})
    try:
        mine = await apragmas(raw)
        if not theirs == mine == expected:
            sys.exit(f"pragmas differ: async store {theirs}, aiosqlite {mine}, sync {expected}")
        names = Names(fresh)

        def raw_call(query: Sql, fetch: bool) -> Callable[[Args], Awaitable[object]]:
            async def call(args: Args) -> object:
                # one trip to aiosqlite's thread: execute, fetch, close the cursor
                return await raw.execute_fetchall(query.text, args)

            return call

        async def put(key: str) -> None:
            await store.set(key, VALUE)

        calls: dict[str, Callable[[str], Awaitable[object]]] = {"get": store.get, "set": put}
        rows = []
        for op in ("get", "set"):
            row = AsyncRow(
                f"4 aiosqlite, own engine: {op}",
                op,
                1,
                calls[op],
                raw_call(queries[op], FETCHES[op]),
                queries[op],
                names.of(op),
                SQLITE_TARGET,
                store.engine,
            )
            rows.append(await run_async(row, s))
    finally:
        await raw.close()
        await store.close()
    return rows


def group_sqlite(s: Settings, fresh: Fresh, pragma_text: list[str]) -> list[Result]:
    folder = Path(tempfile.mkdtemp(prefix="bench_drivers_"))
    try:
        rows, pragmas_seen = group_sqlite_sync(folder / "bench.db", s, fresh)
        pragma_text.append(pragmas_seen)
        rows += asyncio.run(group_sqlite_async(folder / "bench.db", s, fresh, pragmas_seen))
        return rows
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- 5. purge_expired -----------------------------------------------------------------------


def fill_purge_table(admin: psycopg.Connection[Any], rows: int) -> int:
    """``rows`` rows, half expired (an hour or a minute ago), a quarter never expiring,
    a quarter expiring tomorrow; vacuumed, so neither side meets another's dead rows."""
    table = sql.Identifier(PURGE_TABLE)
    admin.execute(sql.SQL("TRUNCATE {}").format(table))
    admin.execute(
        sql.SQL(
            "INSERT INTO {} (key, value, expires_at) "
            "SELECT 'purge:' || lpad(i::text, 8, '0'), {}, CASE i % 4 "
            "WHEN 0 THEN now() - interval '1 hour' WHEN 2 THEN now() - interval '1 minute' "
            "WHEN 1 THEN NULL ELSE now() + interval '1 day' END "
            "FROM generate_series(1, {}) AS i"
        ).format(table, sql.Literal(VALUE), sql.Literal(rows))
    )
    admin.execute(sql.SQL("VACUUM ANALYZE {}").format(table))
    return rows // 2


def group_purge(url: str, s: Settings) -> list[Result]:
    conninfo = conninfo_of(url)
    with raw_connect(conninfo) as admin, raw_connect(conninfo) as raw:
        drop_table(admin, PURGE_TABLE)
        store = SQLAlchemyKeyValueStore(url_for(url, "psycopg"), table_name=PURGE_TABLE)
        try:
            store.setup()
            delete = sql.SQL("DELETE FROM {} WHERE expires_at < now()").format(
                sql.Identifier(PURGE_TABLE)
            )
            batches: list[float] = []

            def purge(record: bool) -> int:
                marks = [time.perf_counter()]
                total = store.purge_expired(on_batch=lambda _: marks.append(time.perf_counter()))
                if record:
                    batches.extend(b - a for a, b in itertools.pairwise(marks))
                return total

            def delete_all() -> int:
                return raw.execute(delete).rowcount

            def side(work: Callable[[], int], rows: int) -> float:
                expired = fill_purge_table(admin, rows)
                start = time.perf_counter()
                removed = work()
                took = time.perf_counter() - start
                assert removed == expired, (removed, expired)
                return took

            side(lambda: purge(False), 10_000)  # warm-up
            side(delete_all, 10_000)
            store_s: list[Sample] = []
            raw_s: list[Sample] = []
            for i in range(s.purge_pairs):
                order = [(store_s, lambda: purge(True)), (raw_s, delete_all)]
                for out, work in order if i % 2 == 0 else order[::-1]:
                    out.append(Sample(side(work, s.purge_rows), 0.0))
        finally:
            drop_table(admin, PURGE_TABLE)
            store.close()
    pairs = Pairs(store_s, raw_s)
    q1, ratio, q3 = quartiles(pairs.ratios())
    expired = s.purge_rows // 2
    store_wall, raw_wall = pairs.wall()
    p95 = statistics.quantiles(batches, n=20)[-1] if len(batches) > 1 else batches[0]
    return [
        Result(
            f"5 purge_expired() vs one DELETE: {expired:,} of {s.purge_rows:,} rows expired",
            f"{expired / store_wall:,.0f} rows/s",
            f"{expired / raw_wall:,.0f} rows/s",
            q1,
            ratio,
            q3,
            PURGE_TARGET,
            note=(
                f"{len(batches) // s.purge_pairs} batches of 1000/purge: max "
                f"{max(batches) * 1e3:.1f} ms, p95 {p95 * 1e3:.1f} ms"
            ),
        )
    ]


# --- 6. durable.run -----------------------------------------------------------------------------


def workflow(steps: int) -> Callable[[Any, Any], None]:
    def run(step: Any, deps: Any) -> None:
        for i in range(steps):
            step(lambda i=i: i, key=f"s{i}")

    return run


class Recorder(MemoryStore):
    """Every call the runner makes (name, arguments), and the snapshot texts it saves."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.saved: list[str] = []

    @property
    def calls(self) -> list[str]:
        return [
            f"{name}(release)" if kwargs.get("release") else name for name, _, kwargs in self.log
        ]

    def get(self, key: str) -> str | None:
        self.log.append(("get", (key,), {}))
        return super().get(key)

    def add(self, key: str, value: str, ttl: float | None = None) -> bool:
        self.log.append(("add", (key, value, ttl), {}))
        return super().add(key, value, ttl)

    def add_and_get(
        self, key: str, value: str, ttl: float | None = None, *, other_key: str
    ) -> tuple[bool, str | None]:
        self.log.append(("add_and_get", (key, value, ttl), {"other_key": other_key}))
        MemoryStore.add(self, key, value, ttl)  # not through the recording add and get
        return MemoryStore.get(self, key) == value, MemoryStore.get(self, other_key)

    def delete(self, key: str, *, if_value: str | None = None) -> bool:
        self.log.append(("delete", (key,), {"if_value": if_value}))
        return super().delete(key, if_value=if_value)

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self.log.append(("set", (key, value, ttl), {}))
        self.saved.append(value)
        super().set(key, value, ttl)

    def set_guarded(
        self, key: str, value: str, ttl: float | None = None, *, guard_key: str, guard_value: str
    ) -> bool:
        self.log.append(
            ("set_guarded", (key, value, ttl), {"guard_key": guard_key, "guard_value": guard_value})
        )
        self.saved.append(value)
        return super().set_guarded(key, value, ttl, guard_key=guard_key, guard_value=guard_value)

    def delete_guarded(
        self, key: str, *, guard_key: str, guard_value: str, release: bool = False
    ) -> bool:
        kwargs = {"guard_key": guard_key, "guard_value": guard_value, "release": release}
        self.log.append(("delete_guarded", (key,), kwargs))
        return super().delete_guarded(
            key, guard_key=guard_key, guard_value=guard_value, release=release
        )

    def replay(self, store: SQLAlchemyKeyValueStore, recorded_id: str, new_id: str) -> None:
        """The recorded calls on ``store`` for run ``new_id``, with no runner around them:
        what a run costs in SQL alone (``new_id`` is as long as ``recorded_id``)."""

        def moved(v: Any) -> Any:
            return v.replace(recorded_id, new_id) if isinstance(v, str) else v

        for name, args, kwargs in self.log:
            getattr(store, name)(*map(moved, args), **{k: moved(v) for k, v in kwargs.items()})


def run_id(steps: int, serial: int) -> str:
    return f"bench-{steps:03d}-{serial:08d}"  # one length: snapshots of one size


def durable_row(
    store: SQLAlchemyKeyValueStore,
    steps: int,
    target: float,
    s: Settings,
    serial: Iterator[int],
    label: str,
    replayed: bool = False,
) -> Result:
    """``durable.run`` of ``steps`` steps against ``store.set`` of the snapshots it saves;
    ``replayed``: the run's store calls replayed instead (the floor with no runner)."""
    persistence = create_state_persistence(store)
    recorder = Recorder()
    first = run_id(steps, 0)
    answer = durable.run(None, workflow(steps), id=first, store=recorder)
    assert answer.ok and len(recorder.saved) == steps, answer
    snapshots = recorder.saved
    leftovers: list[str] = []

    def runs(count: int) -> Timed:
        ids = [run_id(steps, next(serial)) for _ in range(count)]

        def work() -> None:
            for one in ids:
                result = durable.run(None, workflow(steps), id=one, store=persistence)
                assert result.ok, result

        def replay() -> None:
            for one in ids:
                recorder.replay(store, first, one)

        return replay if replayed else work

    def upserts(count: int) -> Timed:
        ids = [persistence.key(run_id(steps, next(serial))) for _ in range(count)]
        leftovers.extend(ids)

        def work() -> None:
            for key in ids:
                for text in snapshots:
                    store.set(key, text)

        return work

    def make(count: int) -> tuple[Measure, Measure]:
        if leftovers:  # the previous pair's rows, untimed (a run deletes its own)
            store.delete_many(leftovers)
            leftovers.clear()
        return timed(runs(count)), timed(upserts(count))

    paired(2, lambda: make(1))  # warm-up
    per_run = max(paired(2, lambda: make(2)).wall()) / 2  # the slower side's
    count = max(1, round(2 * s.chunk / per_run))  # runs per chunk
    pairs = paired(s.durable_pairs, lambda: make(count))
    store.delete_many(leftovers)
    q1, ratio, q3 = quartiles([1 / r for r in pairs.ratios()])  # run time / upserts time
    run_s, set_s = pairs.wall()
    counts = {c: recorder.calls.count(c) for c in dict.fromkeys(recorder.calls)}
    sent = ", ".join(c if n == 1 else f"{n} {c}" for c, n in counts.items())
    side = "its store calls replayed" if replayed else "durable.run"
    log(f"  {side} {steps}{label}: {ratio:.2f}")
    if replayed:
        title = f"6 floor: a {steps}-step run's store calls, no runner{label} (time)"
        note = f"{sent}, as the run sends them: the SQL alone"
    else:
        title = f"6 durable.run, {steps} steps vs {steps} set(){label} (time)"
        note = f"a run: {sent}; last snapshot {len(snapshots[-1]):,} B"
    return Result(
        title,
        f"{run_s / count * 1e3:.2f} ms/run",
        f"{set_s / count * 1e3:.2f} ms",
        q1,
        ratio,
        q3,
        target,
        lower_is_better=True,
        note=note,
    )


def checkpoint_row(store: SQLAlchemyKeyValueStore, s: Settings, label: str) -> Result:
    """What the fence costs: a checkpoint's ``set_guarded`` (the row written only while
    the run's lease row holds its token) against ``set`` of the same snapshot text."""
    recorder = Recorder()
    assert durable.run(None, workflow(10), id=run_id(10, 0), store=recorder).ok
    text = recorder.saved[-1]
    lease_key, lease_value = "bench:checkpoint:lease", '{"ownerToken":"' + "t" * 32 + '"}'
    store.set(lease_key, lease_value)
    fenced, plain = "bench:checkpoint:fenced", "bench:checkpoint:plain"

    def guarded(_: int) -> object:
        return store.set_guarded(fenced, text, guard_key=lease_key, guard_value=lease_value)

    def unguarded(_: int) -> object:
        return store.set(plain, text)

    count = max(1, round(s.chunk / max(seconds(loop(guarded, range(50))) / 50, 1e-6)))
    calls = range(count)
    sides = (timed(loop(guarded, calls)), timed(loop(unguarded, calls)))
    pairs = paired(s.durable_pairs, lambda: sides)
    store.delete_many([lease_key, fenced, plain])
    q1, ratio, q3 = quartiles([1 / r for r in pairs.ratios()])  # fenced time / plain time
    fenced_s, plain_s = pairs.wall()
    return Result(
        f"6 fence: a checkpoint's set_guarded vs set{label} (time)",
        f"{fenced_s / count * 1e6:.0f} us",
        f"{plain_s / count * 1e6:.0f} us",
        q1,
        ratio,
        q3,
        math.nan,
        lower_is_better=True,
        note=f"the {len(text):,} B snapshot of a 10-step run; explains the floor rows",
    )


def group_durable(url: str, s: Settings) -> list[Result]:
    serial = iter(range(1, 10**8))
    results: list[Result] = []
    settings: list[tuple[str, dict[str, Any], str]] = [
        ("psycopg", {}, ""),  # the default: statements by name
        ("psycopg", {"prepare_threshold": 5}, ", prepared"),
        ("psycopg", {"prepare_threshold": None}, ", never prepared"),
        ("psycopg2", {}, ", psycopg2"),  # by name too
    ]
    for driver, setting, label in settings:
        with SQLAlchemyKeyValueStore(url_for(url, driver), table_name=TABLE, **setting) as store:
            results.append(checkpoint_row(store, s, label))
            results += [
                durable_row(store, steps, target, s, serial, label, replayed)
                for steps, target in DURABLE_TARGETS.items()
                for replayed in (False, True)
            ]
    return results


# --- main -----------------------------------------------------------------------------------


def url_for(url: str, driver: str) -> str:
    """``url`` with the given PostgreSQL driver."""
    parsed = make_url(url)
    return parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


def describe(conninfo: str, mode: str) -> None:
    with raw_connect(conninfo) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
        commit = conn.execute("SHOW synchronous_commit").fetchone()
    assert version and fsync and commit
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    print(
        f"PostgreSQL {version[0]} (fsync={fsync[0]}, synchronous_commit={commit[0]}); "
        f"Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}"
    )
    print(
        f"drivers: psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}), "
        f"psycopg2 {psycopg2.__version__.split()[0]}, asyncpg {asyncpg.__version__}, "
        f"aiosqlite {aiosqlite.__version__}, sqlite3 (SQLite {sqlite3.sqlite_version})"
    )
    print(
        f"machine: {platform.machine()}, {cpu}, nproc {os.cpu_count()} "
        f"(this process may use {len(os.sched_getaffinity(0))}); mode: {mode}"
    )


def run(url: str, s: Settings, mode: str, only: set[str]) -> None:
    conninfo = conninfo_of(url)
    describe(conninfo, mode)
    started = time.perf_counter()
    fresh = Fresh()
    results: list[Result] = []
    pragma_text: list[str] = []  # what the SQLite rows ran with, for the title
    with raw_connect(conninfo) as admin:
        drop_table(admin, TABLE)
        try:
            if only & {"1", "2", "3"}:
                with SQLAlchemyKeyValueStore(url_for(url, "psycopg"), table_name=TABLE) as setup:
                    setup.set_many((k, VALUE) for k in keys("hit", HITS))  # what the reads find
            groups: list[tuple[str, str, Callable[[], list[Result]]]] = [
                (
                    "1",
                    "1. psycopg2, a caller's engine",
                    lambda: group_psycopg2(url, s, fresh, admin),
                ),
                (
                    "2",
                    "2. asyncpg, a caller's AsyncEngine",
                    lambda: asyncio.run(group_asyncpg(url, s, fresh, admin)),
                ),
                (
                    "3",
                    "3. the store's own async engine, 50 tasks over 10 connections",
                    lambda: asyncio.run(group_async_pool(url, s, fresh)),
                ),
                ("4", "4. SQLite", lambda: group_sqlite(s, fresh, pragma_text)),
                ("5", "5. purge_expired", lambda: group_purge(url, s)),
                ("6", "6. durable.run", lambda: group_durable(url, s)),
            ]
            for number, title, work in groups:
                if number in only:
                    log(title)
                    try:
                        results += work()
                    except Exception as e:
                        results.append(failure(title, e))
        finally:
            drop_table(admin, TABLE)
    title = (
        f"The store vs the raw driver, same SQL ({s.pairs} chunk pairs per rate row, "
        f"{s.purge_pairs} for purge, {s.durable_pairs} for durable); store/baseline is a speed "
        "ratio, except (time) rows: lower is better"
    )
    if pragma_text:
        title += f"\nSQLite, both sides: {pragma_text[0]}"
    print_table(title, HEADERS, [r.cells() for r in results])
    print(
        "notes: direct = the store ran its compiled SQL on the pooled driver connection; "
        "Connection = through SQLAlchemy's Connection.execute\n"
        "(checked to send the baseline's SQL and values); CPU = this process's CPU per call, "
        "store/baseline"
    )
    for marker, text in FOOTNOTES.items():
        print(f"{marker} {text}")
    print(f"\ntotal time {time.perf_counter() - started:.0f} s")
    below = [r.label for r in results if not r.meets]
    print("below target: " + ("; ".join(below) if below else "none"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="SQLAlchemy or libpq URL of a PostgreSQL database")
    parser.add_argument("--quick", action="store_true", help="fewer pairs, about 2 minutes")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="ROW",
        choices=[*GROUPS, *GROUPS.values()],
        help=f"run only these rows, by name or number: {', '.join(GROUPS)} (1-6)",
    )
    args = parser.parse_args(argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    only = {GROUPS.get(name, name) for name in args.only} if args.only else set(GROUPS.values())
    with database(args.url) as url:
        run(url, settings, mode, only)


if __name__ == "__main__":
    main()
