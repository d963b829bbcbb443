"""Auto-create when many processes start at once on an empty database.

``CREATE TABLE IF NOT EXISTS`` is not race-safe on PostgreSQL: two sessions can
both find the name free, and the slower one then fails on a catalog unique
index (``pg_type_typname_nsp_index``, ``pg_class_relname_nsp_index``). The first
test shows that sixteen processes started together do hit that race with the
Node.js adapter's unguarded seed DDL, so the setup can tell; the second shows
the same crowd calling ``setup()`` on the store always succeeds.

Each process connects first, so connection set-up is out of the race, then
waits on one shared barrier and runs its job the moment the last one arrives.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, make_url, text

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore

PROCESSES = 16
UNGUARDED_TRIALS = 10  # at most; stops at the first trial with an error
GUARDED_TRIALS = 5
BARRIER_TIMEOUT = 60.0  # seconds for all processes to start, import and connect
RESULT_TIMEOUT = 90.0  # seconds for a whole trial

Start = Callable[[], None]
Job = Callable[[str, str, int, Start], None]

# What losing the race looks like: a duplicate in a catalog's unique index, or
# "relation/type ... already exists" when the loser's own check comes a moment late.
RACE_SQLSTATES = {
    "23505": "unique_violation",
    "42P07": "duplicate_table",
    "42710": "duplicate_object",
}


def fresh_table() -> str:
    return f"t_race_{uuid.uuid4().hex[:12]}"


def conninfo(url: str) -> str:
    """The libpq URL for psycopg from the SQLAlchemy ``postgresql+psycopg://`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def describe(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    sqlstate = getattr(orig, "sqlstate", None)
    first_line = (str(orig).strip().splitlines() or [""])[0]
    return f"{type(orig).__name__} [{sqlstate}]: {first_line}"


def unguarded_job(url: str, table: str, index: int, start: Start) -> None:
    """The Node.js adapter's seed DDL, run as it runs it: autocommit, no lock."""
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        start()
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} "
            "(key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at TIMESTAMP)"
        )
        conn.execute(
            f"CREATE INDEX IF NOT EXISTS idx_{table}_expires_at ON {table}(expires_at) "
            "WHERE expires_at IS NOT NULL"
        )


def guarded_job(url: str, table: str, index: int, start: Start) -> None:
    """What an application process does: build the store, set it up, write."""
    store = SQLAlchemyKeyValueStore(url, table_name=table)
    try:
        with store.engine.connect():
            pass  # the pool now holds an open connection; setup() reuses it
        start()
        store.setup()
        store.set(f"k{index}", "v")
    finally:
        store.close()


def _serve(index: int, inbox: Any, barrier: Any, results: Any) -> None:  # pragma: no cover
    """A worker process: runs each job it is sent, released together with the others."""
    while (task := inbox.get()) is not None:
        job, url, table = task
        started = False

        def start() -> None:
            nonlocal started
            started = True
            barrier.wait(BARRIER_TIMEOUT)

        try:
            job(url, table, index, start)
        except BaseException as e:
            if not started:
                barrier.abort()  # do not leave the others waiting for us
            results.put((table, index, describe(e)))
        else:
            results.put((table, index, None))


class Crowd:
    """``n`` OS processes (spawned once: importing SQLAlchemy in 16 fresh interpreters
    costs ~20 s of CPU) that run one job per trial, all released by one barrier.

    Every trial builds new connections and, for the store, a new store and engine;
    nothing the race depends on survives from one trial to the next in a process.
    """

    def __init__(self, n: int = PROCESSES) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.n = n
        self.barrier = ctx.Barrier(n)
        self.results = ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(n)]
        self.procs = [
            ctx.Process(target=_serve, args=(i, inbox, self.barrier, self.results), daemon=True)
            for i, inbox in enumerate(self.inboxes)
        ]
        for p in self.procs:
            p.start()

    def run(self, job: Job, url: str, table: str) -> list[str | None]:
        """Run ``job`` against ``table`` in every process at once; each one's error or None."""
        self.barrier.reset()  # in case an earlier trial broke it
        for inbox in self.inboxes:
            inbox.put((job, url, table))
        outcomes: dict[int, str | None] = {}
        deadline = time.monotonic() + RESULT_TIMEOUT
        while len(outcomes) < self.n:
            try:
                trial, index, error = self.results.get(
                    timeout=max(0.1, deadline - time.monotonic())
                )
            except queue.Empty:
                missing = sorted(set(range(self.n)) - set(outcomes))
                self.close()
                pytest.fail(f"processes {missing} reported nothing in {RESULT_TIMEOUT}s")
            assert trial == table, (trial, table)
            outcomes[index] = error
        return [outcomes[i] for i in range(self.n)]

    def close(self) -> None:
        for inbox, p in zip(self.inboxes, self.procs, strict=True):
            if p.is_alive():
                inbox.put(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()  # only ever our own children, by their Process handle
                p.join()


@pytest.fixture(scope="module")
def crowd(postgres: Any) -> Iterator[Crowd]:
    started = Crowd()
    yield started
    started.close()


def is_race_error(error: str) -> bool:
    return any(f"[{state}]" in error for state in RACE_SQLSTATES)


def drop(url: str, *tables: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for table in tables:
                conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    finally:
        engine.dispose()


@pytest.mark.slow
def test_unguarded_if_not_exists_ddl_races(postgres: Any, crowd: Crowd) -> None:
    """The control: the same crowd, running plain IF NOT EXISTS DDL, does collide."""
    errors: list[str] = []
    trials = 0
    tables: list[str] = []
    try:
        while trials < UNGUARDED_TRIALS and not errors:
            trials += 1
            table = fresh_table()
            tables.append(table)
            errors = [e for e in crowd.run(unguarded_job, postgres.url, table) if e]
    finally:
        drop(postgres.url, *tables)
    print(f"\nunguarded DDL: {len(errors)} of {PROCESSES} processes failed in trial {trials}")
    for error, count in Counter(errors).most_common():
        print(f"  {count} x {error}")
    assert errors, (
        f"{PROCESSES} processes running unguarded CREATE ... IF NOT EXISTS never collided "
        f"in {trials} trials: this setup cannot tell a race-safe setup() from a racy one"
    )
    assert any(is_race_error(e) for e in errors), f"no duplicate/already-exists error: {errors}"


def test_setup_is_safe_when_many_processes_start_at_once(postgres: Any, crowd: Crowd) -> None:
    engine = create_engine(postgres.url)
    tables: list[str] = []
    try:
        for trial in range(1, GUARDED_TRIALS + 1):
            table = fresh_table()
            tables.append(table)
            outcomes = crowd.run(guarded_job, postgres.url, table)
            failed = {i: e for i, e in enumerate(outcomes) if e}
            assert not failed, f"trial {trial}: processes failed: {failed}"
            with engine.connect() as conn:
                keys = conn.execute(text(f"SELECT key FROM {table} ORDER BY key")).scalars()
                assert sorted(keys) == sorted(f"k{i}" for i in range(PROCESSES)), trial
        print(f"\nguarded setup(): {GUARDED_TRIALS} trials x {PROCESSES} processes, no errors")
    finally:
        engine.dispose()
        drop(postgres.url, *tables)
