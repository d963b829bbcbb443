"""Time per step of durable.run against awaitly 1.35 on Node.js, same table, same server.

Workflows of 10, 100 and 1,000 trivial steps (each returns its index) run
through ``sqlalchemy_awaitly.durable.run`` on ``SQLAlchemyKeyValueStore`` and
through awaitly 1.35.0's own ``durable.run`` on Node.js with a store over the
same table (``tests/interop/pg_store.mjs``). Both take a lease, load, save
the whole snapshot after every step, and delete it at the end. The two sides
run in alternating rounds and the table shows medians of each side and their
ratio, from this one run.

It also reports the bytes each workflow writes: every save rewrites the whole
snapshot, so a workflow of N steps writes about N**2 / 2 step records.

Run from the project root (needs npm for awaitly@1.35.0 and pg, cached in
``.tools/bench-node``)::

    .venv/bin/python benchmarks/bench_durable.py [--quick] [--url URL]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_store import database, print_table
from sqlalchemy import create_engine, text

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import MemoryStore

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / ".tools" / "bench-node"
TABLE = "bench_durable"
FULL = {10: 30, 100: 6, 1000: 1}
QUICK = {10: 10, 100: 2, 1000: 1}


def node_project() -> Path:
    if not (NODE_DIR / "node_modules" / "awaitly").is_dir():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        (NODE_DIR / "package.json").write_text('{"private": true, "type": "module"}\n')
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
             "awaitly@1.35.0", "pg@8"],
            cwd=NODE_DIR,
            check=True,
        )  # fmt: skip
    shutil.copy(ROOT / "tests" / "interop" / "pg_store.mjs", NODE_DIR)
    shutil.copy(Path(__file__).with_name("durable_bench.mjs"), NODE_DIR)
    return NODE_DIR


def workflow(size: int) -> Any:
    def steps(step: Any, deps: Any) -> Any:
        last = 0
        for i in range(size):
            last = step(lambda i=i: i, key=f"step-{i}")
        return last

    return steps


def python_round(
    store: SQLAlchemyKeyValueStore, plan: dict[int, int], tag: str
) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for size, repeats in plan.items():
        out[size] = []
        for r in range(repeats):
            began = time.perf_counter()
            result = durable.run(None, workflow(size), id=f"py-{tag}-{size}-{r}", store=store)
            assert result.ok, result
            out[size].append(time.perf_counter() - began)
    return out


def node_round(project: Path, url: str, plan: dict[int, int], tag: str) -> dict[int, list[float]]:
    done = subprocess.run(
        ["node", str(project / "durable_bench.mjs"), url, TABLE, json.dumps(plan), tag],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    )
    return {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


class CountingStore(MemoryStore):
    """Counts the state rows written, their bytes, and the largest one."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.saves = 0
        self.largest = 0

    def _count(self, key: str, value: str) -> None:
        if key.startswith("workflow:state:"):
            size = len(key.encode()) + len(value.encode())
            self.bytes += size
            self.saves += 1
            self.largest = max(self.largest, size)

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self._count(key, value)
        super().set(key, value, ttl)

    def set_guarded(self, key: str, value: str, ttl: float | None = None, **guard: str) -> bool:
        self._count(key, value)  # checkpoints are written while the lease is held
        return super().set_guarded(key, value, ttl, **guard)


def bytes_written(size: int) -> tuple[int, int, int]:
    store = CountingStore()
    durable.run(None, workflow(size), id="bytes", store=store)
    assert store.saves == size, "a checkpoint was not counted"
    return store.bytes, store.saves, store.largest


def wal_written(url: str, size: int) -> int:
    """WAL bytes PostgreSQL wrote while one Python run of ``size`` steps ran (alone)."""
    store = SQLAlchemyKeyValueStore(url, table_name=TABLE)
    engine = create_engine(url)
    lsn = text("SELECT pg_current_wal_insert_lsn()")
    try:
        with engine.connect() as conn:
            before = conn.execute(lsn).scalar()
        durable.run(None, workflow(size), id=f"wal-{size}", store=store)
        with engine.connect() as conn:
            after = conn.execute(lsn).scalar()
            diff = text("SELECT pg_wal_lsn_diff(:after, :before)")
            return int(conn.execute(diff, {"after": after, "before": before}).scalar_one())
    finally:
        store.close()
        engine.dispose()


def run(url: str, plan: dict[int, int], rounds: int) -> None:
    project = node_project()
    node_url = url.replace("+psycopg", "")
    store = SQLAlchemyKeyValueStore(url, table_name=TABLE)
    store.setup()
    python: dict[int, list[float]] = {size: [] for size in plan}
    node: dict[int, list[float]] = {size: [] for size in plan}
    try:
        python_round(store, {10: 3}, "warm")
        for r in range(rounds):
            for size, times in python_round(store, plan, f"r{r}").items():
                python[size].extend(times)
            for size, times in node_round(project, node_url, plan, f"r{r}").items():
                node[size].extend(times)
    finally:
        store.close()

    rows = []
    for size in plan:
        py = statistics.median(python[size]) / size * 1e3
        js = statistics.median(node[size]) / size * 1e3
        rows.append(
            [f"{size:,} steps", f"{py:.3f} ms", f"{js:.3f} ms", f"{py / js:.2f}",
             f"{len(python[size])} / {len(node[size])}"]
        )  # fmt: skip
    print_table(
        "Time per step (median per workflow / steps); ratio < 1: Python is faster",
        ["workflow", "Python durable.run", "awaitly 1.35 (Node)", "Python / Node", "runs"],
        rows,
    )
    byte_rows = []
    for size in plan:
        total, saves, largest = bytes_written(size)
        wal = wal_written(url, size)
        byte_rows.append(
            [f"{size:,} steps", f"{saves:,}", f"{largest:,} B", f"{total:,} B",
             f"{total / size:,.0f} B", f"{wal:,} B"]
        )  # fmt: skip
    print_table(
        "Bytes written per workflow (state rows; each save rewrites the snapshot) and the "
        "WAL PostgreSQL wrote for one Python run (it compresses large values)",
        ["workflow", "saves", "last snapshot", "total written", "per step", "WAL"],
        byte_rows,
    )
    cleanup = SQLAlchemyKeyValueStore(url, table_name=TABLE)
    with cleanup.engine.begin() as conn:
        cleanup.table.drop(conn, checkfirst=True)
    cleanup.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="SQLAlchemy URL of a PostgreSQL database")
    parser.add_argument("--quick", action="store_true", help="fewer runs, about a minute")
    args = parser.parse_args(argv)
    if shutil.which("node") is None:
        sys.exit("needs Node.js (and npm) for the awaitly side")
    with database(args.url) as url:
        run(url, QUICK if args.quick else FULL, 2 if args.quick else 3)


if __name__ == "__main__":
    main()
