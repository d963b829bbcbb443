"""Benchmark SQLAlchemyKeyValueStore against raw psycopg 3 on PostgreSQL.

Everything is reported as ratios between numbers taken in the same run: the
two sides of a comparison run in short alternating chunks (store, raw, raw,
store, ...), each pair of neighbouring chunks gives one ratio, and a row shows
the median of those ratios with its interquartile range. Absolute rates move a
lot on a small shared machine; chunk-level pairing makes both sides see the
same conditions.

1. One connection: ops/s of ``set``, ``get`` (hit), ``get`` (miss),
   ``exists`` and ``delete`` through ``SQLAlchemyKeyValueStore(url)``, next to
   the floor: one raw psycopg connection, autocommit, running the store's own
   SQL text (compiled from its statements), planned as often as the store's:
   (a) the default store, whose statements go by name (prepared once per
   session, safe behind PgBouncer), against ``prepare=True``; (b)
   ``prepare_threshold=0`` against ``prepare=True``; (c)
   ``prepare_threshold=None``, which prepares nothing, against
   ``prepare=False``; (d) what the names save: (a)'s store against (c)'s;
   (e) what taking the pool's record directly buys: (a)'s store against the
   same store through SQLAlchemy's full checkout (forced by a no-op
   ``checkout`` listener).
   Targets: reads >= 0.80 of the floor, writes >= 0.90.
2. Batches: ``set_many`` / ``get_many`` of 1,000 keys against 1,000 single
   ``set`` / ``get`` calls. Target: >= 10x faster.
3. Eight threads sharing one store (pool of 8) against eight threads with a
   raw connection each, same SQL, neither preparing, ``get`` hits and ``set``.
   Target: >= 0.70 of the raw total ops/s.
4. ``keys("bench:scan:*")`` on tables of 100k and 1M rows (10k and 100k with
   ``--quick``), 1% of keys matching: ms per call, keys returned, and the top
   plan node for the statement the store sends (generic and custom plan, and
   which of the two the store's prepared statement actually ran with).
5. Behind a PgBouncer (transaction pooling) that the script starts in front
   of the server, if the ``pgbouncer`` binary is installed: ``get`` and
   ``set`` of the default store against raw psycopg ``prepare=False`` (raw
   psycopg cannot prepare there), both through it. Targets as in 1.

Run from the project root::

    .venv/bin/python benchmarks/bench_store.py            # starts a throwaway server
    .venv/bin/python benchmarks/bench_store.py --quick    # well under a minute
    .venv/bin/python benchmarks/bench_store.py --url postgresql://user@host/db

Without ``--url`` it uses ``tests/postgres_server.py`` (``TEST_DATABASE_URL``,
Docker, or the local PostgreSQL binaries). It creates, and drops at the end,
its own tables ``bench_kv`` and ``bench_scan_<rows>``; an existing table of
one of those names is dropped first.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy
from measure import (
    Fresh,
    Measure,
    Pairs,
    Timed,
    conninfo_of,
    database,
    drop_table,
    in_threads,
    keys,
    median,
    paired,
    print_table,
    quartiles,
    raw_connect,
    seconds,
    timed,
)
from psycopg import sql
from sqlalchemy import event

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore
from sqlalchemy_awaitly.execution import compile_ops

TABLE = "bench_kv"
VALUE = '{"status": "running", "step": 7, "data": "' + "x" * 200 + '"}'
THREADS = 8
BATCH = 1_000
HITS = 2_000  # keys present for the read benchmarks
SCAN_PREFIX = "bench:scan:"
READ_TARGET = 0.80
WRITE_TARGET = 0.90
BATCH_TARGET = 10.0
THREAD_TARGET = 0.70


@dataclass(frozen=True)
class Settings:
    """How much work each section does; ``--quick`` shrinks everything."""

    pairs: int  # chunk pairs per row in sections 1 and 3
    read_chunk: int  # calls per chunk, one connection
    write_chunk: int
    thread_read_chunk: int  # calls per thread per chunk
    thread_write_chunk: int
    batch_pairs: int
    scan_sizes: tuple[int, ...]
    scan_calls: int


FULL = Settings(
    pairs=60,
    read_chunk=200,
    write_chunk=50,
    thread_read_chunk=100,
    thread_write_chunk=25,
    batch_pairs=9,
    scan_sizes=(100_000, 1_000_000),
    scan_calls=25,
)
QUICK = Settings(
    pairs=12,
    read_chunk=200,
    write_chunk=50,
    thread_read_chunk=100,
    thread_write_chunk=25,
    batch_pairs=3,
    scan_sizes=(10_000, 100_000),
    scan_calls=7,
)

Params = dict[str, Any]
RATE_HEADERS = [
    "operation",
    "store ops/s",
    "raw ops/s",
    "store/raw",
    "p25-p75",
    "target",
    "result",
    "client CPU us/op store / raw",
]


# --- plumbing -------------------------------------------------------------------------


def store_sql(store: SQLAlchemyKeyValueStore) -> dict[str, str]:
    """The SQL text the store sends for each of its operations, by operation name."""
    store.setup()
    assert store._statements is not None
    compiled = compile_ops(store._statements, store.engine.dialect)
    assert not any(c.fixed_params for c in compiled.values()), "the raw side passes no fixed params"
    return {op.name: c.sql for op, c in compiled.items()}


def verdict(value: float, target: float) -> str:
    return "pass" if value >= target else "FAIL"


# --- 1. one connection ------------------------------------------------------------------


def store_loop(call: Callable[[str], object], names: Sequence[str]) -> Timed:
    def run() -> None:
        for name in names:
            call(name)

    return run


def raw_loop(
    cur: psycopg.Cursor[Any], query: str, params: Sequence[Params], fetch: bool, prepare: bool
) -> Timed:
    def run() -> None:
        for p in params:
            cur.execute(query, p, prepare=prepare)
            if fetch:
                cur.fetchall()

    return run


def key_only(name: str) -> Params:
    return {"key": name}


def key_value(name: str) -> Params:
    return {"key": name, "value": VALUE, "ttl": None}


@dataclass(frozen=True)
class Case:
    """One operation, as the store calls it and as raw parameters for the same SQL."""

    label: str
    op: str  # the store's statement name
    target: float
    fetch: bool  # whether the statement returns rows
    store_call: Callable[[str], object]
    raw_params: Callable[[str], Params]
    names: Callable[[], list[str]]  # the keys of one chunk (made before timing)


def single_cases(store: SQLAlchemyKeyValueStore, s: Settings, fresh: Fresh) -> list[Case]:
    hits = keys("hit", HITS)
    chunks = iter(range(1_000_000))

    def hit_chunk() -> list[str]:
        start = next(chunks) * s.read_chunk % HITS
        return hits[start : start + s.read_chunk]

    def live_keys() -> list[str]:
        names = fresh("del", s.write_chunk)
        store.set_many((n, VALUE) for n in names)  # untimed: each delete removes a live key
        return names

    def put(name: str) -> None:
        store.set(name, VALUE)

    reads = (
        ("get (hit)", "get", store.get, hit_chunk),
        ("get (miss)", "get", store.get, lambda: fresh("miss", s.read_chunk)),
        ("exists", "exists", store.exists, hit_chunk),
    )
    return [
        Case(
            "set", "set", WRITE_TARGET, False, put, key_value, lambda: fresh("set", s.write_chunk)
        ),
        *(
            Case(label, op, READ_TARGET, True, call, key_only, names)
            for label, op, call, names in reads
        ),
        Case("delete", "delete", WRITE_TARGET, True, store.delete, key_only, live_keys),
    ]


def rate_row(case: Case, ops: int, pairs: Pairs) -> list[str]:
    """ops/s of each side (median chunk), the median of the paired ratios, CPU per op."""
    q1, ratio, q3 = quartiles(pairs.ratios())
    store_s, raw_s = pairs.wall()
    store_cpu, raw_cpu = pairs.cpu()
    return [
        case.label,
        f"{ops / store_s:,.0f}",
        f"{ops / raw_s:,.0f}",
        f"{ratio:.2f}",
        f"{q1:.2f}-{q3:.2f}",
        f">= {case.target:.2f}",
        verdict(ratio, case.target),
        f"{store_cpu / ops * 1e6:.1f} / {raw_cpu / ops * 1e6:.1f}",
    ]


def measure_single(
    store: SQLAlchemyKeyValueStore,
    cur: psycopg.Cursor[Any],
    query: str,
    case: Case,
    pairs: int,
    prepare: bool,
) -> list[str]:
    ops: list[int] = []

    def make() -> tuple[Measure, Measure]:
        store_names, raw_names = case.names(), case.names()
        ops.append(len(store_names))
        raw_params = [case.raw_params(n) for n in raw_names]
        return (
            timed(store_loop(case.store_call, store_names)),
            timed(raw_loop(cur, query, raw_params, case.fetch, prepare)),
        )

    paired(2, make)  # warm-up: psycopg prepares a statement on its 5th use, on both sides
    return rate_row(case, ops[0], paired(pairs, make))


def section_single(
    store: SQLAlchemyKeyValueStore,
    conninfo: str,
    s: Settings,
    fresh: Fresh,
    prepare: bool,
    title: str,
    cases: Sequence[str] | None = None,
) -> list[list[str]]:
    """The store against raw psycopg with the same prepare setting, on one connection."""
    queries = store_sql(store)
    with raw_connect(conninfo) as raw, raw.cursor() as cur:
        rows = [
            measure_single(store, cur, queries[case.op], case, s.pairs, prepare)
            for case in single_cases(store, s, fresh)
            if cases is None or case.label in cases
        ]
    print_table(
        f"{title} ({s.pairs} chunk pairs; {s.read_chunk} reads or {s.write_chunk} writes "
        "per chunk)",
        RATE_HEADERS,
        rows,
    )
    return rows


def section_two_stores(
    a: SQLAlchemyKeyValueStore,
    b: SQLAlchemyKeyValueStore,
    s: Settings,
    fresh: Fresh,
    title: str,
    names: tuple[str, str],
) -> list[list[str]]:
    """Two stores doing the same calls, in alternating chunks: what their difference costs."""
    rows = []
    for a_case, b_case in zip(single_cases(a, s, fresh), single_cases(b, s, fresh), strict=True):
        ops: list[int] = []

        def make(
            x: Case = a_case, y: Case = b_case, ops: list[int] = ops
        ) -> tuple[Measure, Measure]:
            first, second = x.names(), y.names()
            ops.append(len(first))
            return timed(store_loop(x.store_call, first)), timed(store_loop(y.store_call, second))

        paired(2, make)
        pairs = paired(s.pairs, make)
        q1, ratio, q3 = quartiles(pairs.ratios())
        wall_a, wall_b = pairs.wall()
        rows.append(
            [
                a_case.label,
                f"{ops[0] / wall_a:,.0f}",
                f"{ops[0] / wall_b:,.0f}",
                f"{ratio:.2f}",
                f"{q1:.2f}-{q3:.2f}",
            ]
        )
    print_table(
        f"{title} ({s.pairs} chunk pairs)",
        ["operation", f"{names[0]} ops/s", f"{names[1]} ops/s", "/".join(names), "p25-p75"],
        rows,
    )
    return rows


def full_checkout_store(url: str) -> SQLAlchemyKeyValueStore:
    """The default store, made to take SQLAlchemy's full checkout on every call.

    Any ``checkout`` listener does that (see ``sqlalchemy_awaitly.pool_checkout``);
    this one does nothing else.
    """
    store = SQLAlchemyKeyValueStore(url, table_name=TABLE)
    event.listen(store.engine, "checkout", lambda dbapi, record, proxy: None)
    return store


# --- 2. batches -------------------------------------------------------------------------


def section_batch(store: SQLAlchemyKeyValueStore, s: Settings, fresh: Fresh) -> list[list[str]]:
    def make_sets() -> tuple[Measure, Measure]:
        many, single = fresh("many", BATCH), fresh("one", BATCH)
        return (
            timed(lambda: store.set_many((k, VALUE) for k in many)),
            timed(store_loop(lambda k: store.set(k, VALUE), single)),
        )

    hits = keys("hit", BATCH)
    found: list[int] = []

    def make_gets() -> tuple[Measure, Measure]:
        return (
            timed(lambda: found.append(len(store.get_many(hits)))),
            timed(store_loop(store.get, hits)),
        )

    rows = [
        batch_row("set_many vs set", paired(s.batch_pairs, make_sets)),
        batch_row("get_many vs get", paired(s.batch_pairs, make_gets)),
    ]
    assert found and all(n == BATCH for n in found), found
    headers = [f"{BATCH:,} keys", "batch ms", "single calls ms", "speed-up", "p25-p75"]
    print_table(
        f"2. Batches of {BATCH:,} keys vs {BATCH:,} single calls ({s.batch_pairs} pairs)",
        [*headers, "target", "result"],
        rows,
    )
    return rows


def batch_row(label: str, pairs: Pairs) -> list[str]:
    q1, factor, q3 = quartiles(pairs.ratios())
    batch_s, singles_s = pairs.wall()
    return [
        label,
        f"{batch_s * 1e3:,.1f}",
        f"{singles_s * 1e3:,.1f}",
        f"{factor:,.1f}x",
        f"{q1:,.1f}-{q3:,.1f}",
        f">= {BATCH_TARGET:.0f}x",
        verdict(factor, BATCH_TARGET),
    ]


# --- 3. threads -------------------------------------------------------------------------


def thread_cases(store: SQLAlchemyKeyValueStore, s: Settings, fresh: Fresh) -> list[Case]:
    hits = keys("hit", HITS)
    chunks = iter(range(1_000_000))

    def hit_chunk() -> list[str]:
        start = next(chunks) * 997
        return [hits[(start + i) % HITS] for i in range(s.thread_read_chunk)]

    def put(name: str) -> None:
        store.set(name, VALUE)

    return [
        Case("get (hit)", "get", THREAD_TARGET, True, store.get, key_only, hit_chunk),
        Case(
            "set",
            "set",
            THREAD_TARGET,
            False,
            put,
            key_value,
            lambda: fresh("thread", s.thread_write_chunk),
        ),
    ]


def measure_threads(
    case: Case, cursors: Sequence[psycopg.Cursor[Any]], query: str, pairs: int
) -> list[str]:
    ops: list[int] = []

    def make() -> tuple[Measure, Measure]:
        store_side = [case.names() for _ in range(THREADS)]
        raw_side = [[case.raw_params(n) for n in case.names()] for _ in range(THREADS)]
        ops.append(sum(len(names) for names in store_side))
        raw_workers = [
            raw_loop(c, query, p, case.fetch, False) for c, p in zip(cursors, raw_side, strict=True)
        ]
        return in_threads([store_loop(case.store_call, n) for n in store_side]), in_threads(
            raw_workers
        )

    paired(2, make)  # warm-up: fills the pool
    return rate_row(case, ops[0], paired(pairs, make))


def section_threads(url: str, conninfo: str, s: Settings, fresh: Fresh) -> list[list[str]]:
    pool = {"pool_size": THREADS, "max_overflow": 0}
    with (
        SQLAlchemyKeyValueStore(url, table_name=TABLE, pool=pool) as store,
        contextlib.ExitStack() as stack,
    ):
        queries = store_sql(store)
        conns = [stack.enter_context(raw_connect(conninfo)) for _ in range(THREADS)]
        cursors = [stack.enter_context(c.cursor()) for c in conns]
        rows = [
            measure_threads(case, cursors, queries[case.op], s.pairs)
            for case in thread_cases(store, s, fresh)
        ]
    print_table(
        f"3. {THREADS} threads: one store (pool of {THREADS}) vs {THREADS} raw connections, "
        "neither preparing "
        f"({s.pairs} chunk pairs; {s.thread_read_chunk} gets or {s.thread_write_chunk} sets "
        f"per thread per chunk)",
        RATE_HEADERS,
        rows,
    )
    return rows


# --- 4. prefix scans --------------------------------------------------------------------


def load_scan_table(admin: psycopg.Connection[Any], table: str, rows: int) -> None:
    """``rows`` keys, every 100th under SCAN_PREFIX, the rest under a sibling prefix."""
    admin.execute(
        sql.SQL(
            "INSERT INTO {} (key, value, expires_at) "
            "SELECT CASE WHEN i % 100 = 0 THEN {} ELSE 'bench:data:' END "
            "|| lpad(i::text, 8, '0'), {}, NULL FROM generate_series(1, {}) AS i"
        ).format(
            sql.Identifier(table), sql.Literal(SCAN_PREFIX), sql.Literal(VALUE), sql.Literal(rows)
        )
    )
    admin.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))


def positional(query: str) -> tuple[str, list[str]]:
    """``%(name)s`` placeholders turned into ``$n``; returns the names in order."""
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, query), names


def plan_top(admin: psycopg.Connection[Any], query: str, params: Params, mode: str) -> str:
    """Top plan node (and the scan under it, if different) for a prepared ``query``.

    ``mode`` is ``force_generic_plan`` or ``force_custom_plan``.
    """
    text, names = positional(query)
    values = sql.SQL(", ").join(sql.Literal(params[n]) for n in names)
    admin.execute(sql.SQL("PREPARE bench_plan AS {}").format(sql.SQL(text)))
    try:
        admin.execute(sql.SQL("SET plan_cache_mode = {}").format(sql.Literal(mode)))
        lines = [
            r[0] for r in admin.execute(sql.SQL("EXPLAIN EXECUTE bench_plan({})").format(values))
        ]
    finally:
        admin.execute("DEALLOCATE bench_plan")
        admin.execute("RESET plan_cache_mode")
    top = node(lines[0])
    scan = next((node(ln) for ln in lines[1:] if "Scan" in ln), None)
    return f"{top} > {scan}" if scan and "Scan" not in top else top


def node(plan_line: str) -> str:
    """``Index Scan using t_pkey`` from ``->  Index Scan using t_pkey on t  (cost=...)``."""
    return re.sub(r" on \S+$", "", plan_line.split("  (cost")[0]).strip(" ->")


def plans_used(store: SQLAlchemyKeyValueStore, table: str) -> str:
    """How often the store's prepared scan ran with a generic / a custom plan."""
    # One connection in the store's pool (the scans ran one at a time): ask on it.
    fairy = store.engine.raw_connection()
    try:
        conn: psycopg.Connection[Any] = fairy.driver_connection  # type: ignore[assignment]
        row = conn.execute(
            "SELECT sum(generic_plans), sum(custom_plans) FROM pg_prepared_statements "
            "WHERE statement LIKE %s",
            [f"%{table}%"],
        ).fetchone()
    finally:
        fairy.close()
    if row is None or row[0] is None:
        return "not prepared"
    return f"{row[0]} generic / {row[1]} custom"


def measure_scan(url: str, admin: psycopg.Connection[Any], rows: int, calls: int) -> list[str]:
    table = f"bench_scan_{rows}"
    drop_table(admin, table)
    with SQLAlchemyKeyValueStore(url, table_name=table) as store:
        try:
            queries = store_sql(store)
            load_scan_table(admin, table, rows)
            pattern = SCAN_PREFIX + "*"
            for _ in range(12):  # past psycopg's prepare threshold and PG's 5 custom plans
                found = store.keys(pattern)
            times = [seconds(lambda: store.keys(pattern)) for _ in range(calls)]
            call = store._calls.keys(pattern)
            assert call.op is not None
            query = queries[call.op]
            used = plans_used(store, table)
            generic = plan_top(admin, query, call.params, "force_generic_plan")
            custom = plan_top(admin, query, call.params, "force_custom_plan")
        finally:
            drop_table(admin, table)
    return [
        f"{rows:,}",
        f"{len(found):,}",
        f"{median(times) * 1e3:,.2f}",
        f"{min(times) * 1e3:,.2f}",
        used,
        generic,
        custom,
    ]


def section_scans(url: str, conninfo: str, s: Settings) -> list[list[str]]:
    with raw_connect(conninfo) as admin:
        rows = [measure_scan(url, admin, n, s.scan_calls) for n in s.scan_sizes]
    headers = [
        "rows",
        "keys",
        "median ms",
        "best ms",
        "store's plans",
        "generic plan",
        "custom plan",
    ]
    print_table(
        f'4. keys("{SCAN_PREFIX}*"), 1% of rows match (median of {s.scan_calls} calls)',
        headers,
        rows,
    )
    return rows


# --- 5. behind PgBouncer ------------------------------------------------------------------


def section_pgbouncer(url: str, conninfo: str, s: Settings, fresh: Fresh) -> list[list[str]]:
    """get/set through PgBouncer in transaction pooling, against raw psycopg through it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from pgbouncer_server import (  # type: ignore[import-not-found, unused-ignore]
        PgBouncerUnavailable,
        provide_pgbouncer,
    )

    try:
        with provide_pgbouncer(url, "transaction") as bouncer:
            proxied = bouncer.url
            with SQLAlchemyKeyValueStore(proxied, table_name=TABLE) as store:
                return section_single(
                    store,
                    conninfo_of(proxied),
                    s,
                    fresh,
                    False,
                    f"5. Behind PgBouncer {'.'.join(map(str, bouncer.version))}, transaction "
                    "pooling: the default store vs raw psycopg prepare=False, both through it",
                    cases=("get (hit)", "set"),
                )
    except PgBouncerUnavailable as e:
        print(f"\n5. Behind PgBouncer: skipped ({e})")
        return []


# --- main -------------------------------------------------------------------------------


def describe_server(conninfo: str) -> None:
    with raw_connect(conninfo) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
        commit = conn.execute("SHOW synchronous_commit").fetchone()
        collation = conn.execute(
            "SELECT datcollate FROM pg_database WHERE datname = current_database()"
        ).fetchone()
    assert version and fsync and commit and collation
    print(
        f"PostgreSQL {version[0]} (fsync={fsync[0]}, synchronous_commit={commit[0]}, "
        f"collation {collation[0]}); Python {platform.python_version()}, "
        f"SQLAlchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__}"
    )


def run(url: str, s: Settings, mode: str) -> None:
    conninfo = conninfo_of(url)
    describe_server(conninfo)
    print(f"mode: {mode}")
    started = time.perf_counter()
    fresh = Fresh()
    with raw_connect(conninfo) as admin:
        drop_table(admin, TABLE)
    try:
        with (
            SQLAlchemyKeyValueStore(url, table_name=TABLE) as store,
            SQLAlchemyKeyValueStore(url, table_name=TABLE, prepare_threshold=0) as prepared,
            SQLAlchemyKeyValueStore(url, table_name=TABLE, prepare_threshold=None) as never,
        ):
            store.set_many((k, VALUE) for k in keys("hit", HITS))  # what the reads find
            single = section_single(
                store,
                conninfo,
                s,
                fresh,
                True,
                "1a. One connection, the default store (statements by name) "
                "vs raw psycopg prepare=True",
            )
            single += section_single(
                prepared,
                conninfo,
                s,
                fresh,
                True,
                "1b. One connection, prepare_threshold=0 vs raw psycopg prepare=True",
            )
            single += section_single(
                never,
                conninfo,
                s,
                fresh,
                False,
                "1c. One connection, prepare_threshold=None (nothing prepared) "
                "vs raw psycopg prepare=False",
            )
            section_two_stores(
                store,
                never,
                s,
                fresh,
                "1d. What the names save: the default store vs prepare_threshold=None "
                "(both the store)",
                ("by name", "never"),
            )
            with full_checkout_store(url) as full:
                section_two_stores(
                    store,
                    full,
                    s,
                    fresh,
                    "1e. What taking the pool's record directly buys: the default store vs "
                    "the same through SQLAlchemy's full checkout",
                    ("direct", "full"),
                )
            batch = section_batch(store, s, fresh)
        threads = section_threads(url, conninfo, s, fresh)
        single += section_pgbouncer(url, conninfo, s, fresh)
    finally:
        with raw_connect(conninfo) as admin:
            drop_table(admin, TABLE)
    section_scans(url, conninfo, s)
    print(f"\ntotal time {time.perf_counter() - started:.0f} s")
    failed = [
        f"{section}. {row[0]}"
        for section, rows in ((1, single), (2, batch), (3, threads))
        for row in rows
        if "FAIL" in row
    ]
    print("below target: " + (", ".join(failed) if failed else "none"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="SQLAlchemy or libpq URL of a PostgreSQL database")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under a minute")
    args = parser.parse_args(argv)
    settings, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    with database(args.url) as url:
        run(url, settings, mode)


if __name__ == "__main__":
    main()
