"""What OpenTelemetry costs: store calls and runs without the API, with the API but
no SDK, and with the SDK recording into in-memory exporters.

The global providers (and whether ``import opentelemetry`` works at all) belong to
a process, so each mode runs in a worker process of its own; the parent asks the
workers for short timed chunks in turn (a, b, c, c, b, a, ...), and each row shows,
for each mode, the median ratio of its chunk time to the neighbouring chunk of the
first mode, with the interquartile range. ``--before PATH`` adds a worker running
the package from another checkout (``git worktree add /tmp/before <rev>``), as the
"today" every mode is compared with.

Workloads: ``get`` (hit) and ``set`` through the store's own engine on PostgreSQL
and on a SQLite file; ``durable.run`` of a 10-step workflow on each, and of a
100-step one on PostgreSQL.

Run from the project root::

    .venv/bin/python benchmarks/bench_telemetry.py            # starts a throwaway server
    .venv/bin/python benchmarks/bench_telemetry.py --quick
    .venv/bin/python benchmarks/bench_telemetry.py --before /tmp/before --url postgresql://...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from measure import conninfo_of, database, drop_table, print_table, raw_connect

ROOT = Path(__file__).resolve().parent.parent
CASES = {
    # case: (ops per chunk, quick ops per chunk)
    "postgresql get": (2000, 600),
    "postgresql set": (1000, 300),
    "sqlite get": (4000, 1200),
    "sqlite set": (400, 150),
    "postgresql run 10 steps": (40, 15),
    "sqlite run 10 steps": (15, 6),
    "postgresql run 100 steps": (4, 2),
}
TABLE = "bench_otel"


# --- the worker: one mode, timing chunks on request ---------------------------------------


def _install(mode: str) -> Any:
    """Set up this process's mode; the SDK's exporter, to clear between chunks."""
    if mode == "absent":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]
        return None
    if mode != "sdk":
        return None
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    return exporter


def worker(mode: str, url: str, sqlite_path: str, quick: bool) -> None:
    exporter = _install(mode)
    from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable

    stores = {
        "postgresql": SQLAlchemyKeyValueStore(url, table_name=TABLE),
        "sqlite": SQLAlchemyKeyValueStore(f"sqlite:///{sqlite_path}", table_name=TABLE),
    }
    tag = f"{mode}-{os.getpid()}"
    for store in stores.values():
        store.set(f"{tag}:hit", "x" * 100)

    def workflow(size: int) -> Any:
        def steps(step: Any, deps: Any) -> Any:
            for i in range(size):
                step(lambda i=i: i, key=f"step-{i}")

        return steps

    sized = {10: workflow(10), 100: workflow(100)}

    serial = 0

    def chunk(case: str) -> float:
        nonlocal serial
        backend, what = case.split(" ", 1)
        store = stores[backend]
        ops = CASES[case][1 if quick else 0]
        began = time.perf_counter()
        if what == "get":
            for _ in range(ops):
                store.get(f"{tag}:hit")
        elif what == "set":
            for i in range(ops):
                store.set(f"{tag}:set:{i}", "x" * 100)
        else:
            steps = sized[int(what.split()[1])]  # "run N steps"
            for _ in range(ops):
                serial += 1
                assert durable.run(None, steps, id=f"{tag}-{serial}", store=store).ok
        return time.perf_counter() - began

    for case in CASES:  # warm up: connections, statements, imports
        chunk(case)
    print("ready", flush=True)
    for line in sys.stdin:
        case = line.strip()
        if not case:
            break
        seconds = chunk(case)
        if exporter is not None:
            exporter.clear()
        print(json.dumps(seconds), flush=True)
    for store in stores.values():
        store.close()


# --- the parent ---------------------------------------------------------------------------


class Worker:
    def __init__(self, mode: str, src: Path, url: str, sqlite_path: str, quick: bool) -> None:
        env = {**os.environ, "PYTHONPATH": str(src)}
        command = [sys.executable, __file__, "--worker", mode, "--url", url]
        command += ["--sqlite", sqlite_path] + (["--quick"] if quick else [])
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=src
        )
        assert self.process.stdout is not None
        ready = self.process.stdout.readline().strip()
        if ready != "ready":
            raise SystemExit(f"the {mode} worker did not start")

    def time(self, case: str) -> float:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(case + "\n")
        self.process.stdin.flush()
        return float(json.loads(self.process.stdout.readline()))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.close()
        self.process.wait(60)


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    import statistics

    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def run(url: str, before: Path | None, rounds: int, quick: bool) -> None:
    with raw_connect(conninfo_of(url)) as admin:
        drop_table(admin, TABLE)
    try:
        times = _measured(url, before, rounds, quick)
    finally:
        with raw_connect(conninfo_of(url)) as admin:
            drop_table(admin, TABLE)
    _report(times, before, rounds, quick)


def _modes(before: Path | None) -> list[str]:
    return (["before"] if before is not None else []) + ["absent", "api", "sdk"]


def _measured(
    url: str, before: Path | None, rounds: int, quick: bool
) -> dict[str, dict[str, list[float]]]:
    modes = _modes(before)
    with tempfile.TemporaryDirectory() as tmp:
        workers = {
            mode: Worker(
                "absent" if mode == "before" else mode,
                before if mode == "before" and before is not None else ROOT,
                url,
                str(Path(tmp) / f"{mode}.db"),
                quick,
            )
            for mode in modes
        }
        try:
            times: dict[str, dict[str, list[float]]] = {c: {m: [] for m in modes} for c in CASES}
            for r in range(rounds):
                for case in CASES:
                    order = modes if r % 2 == 0 else modes[::-1]
                    for mode in order:
                        times[case][mode].append(workers[mode].time(case))
        finally:
            for w in workers.values():
                w.close()
    return times


def _report(
    times: dict[str, dict[str, list[float]]], before: Path | None, rounds: int, quick: bool
) -> None:
    modes = _modes(before)
    base = modes[0]
    headers = ["case", f"{base} ms/op"] + [f"{m} / {base} (p25-p75)" for m in modes[1:]]
    rows = []
    for case, by_mode in times.items():
        ops = CASES[case][1 if quick else 0]
        row = [case, f"{sorted(by_mode[base])[len(by_mode[base]) // 2] / ops * 1000:.3f}"]
        for mode in modes[1:]:
            ratios = [m / b for m, b in zip(by_mode[mode], by_mode[base], strict=True)]
            q1, q2, q3 = _quartiles(ratios)
            row.append(f"{q2:.3f} ({q1:.3f}-{q3:.3f})")
        rows.append(row)
    print_table(
        f"Time per call or run against {base!r}, {rounds} rounds "
        "(absent: no opentelemetry; api: the API, no SDK; sdk: in-memory exporters)",
        headers,
        rows,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="SQLAlchemy URL of a PostgreSQL database")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, about a minute")
    parser.add_argument("--before", type=Path, help="a checkout of the package to compare with")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 30, quick 10)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--sqlite", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.url, args.sqlite, args.quick)
        return
    rounds = args.rounds or (10 if args.quick else 30)
    with database(args.url) as url:
        run(url, args.before, rounds, args.quick)


if __name__ == "__main__":
    main()
