"""Recovery: what recording a run's type and input costs, how soon a crashed run
resumes, and how fast a worker drains crashed runs.

1. The record: ``registry.start`` against ``durable.run`` of the same 1-step and
   10-step workflow (the registered run writes its row once more, before its
   first step), in alternating chunks; the median ratio of their times.
2. Latency: a process running a registered run (lease ``--lease`` s) is SIGKILLed
   after its first step; ``sqlalchemy-awaitly worker`` (poll ``--poll`` s), already
   running, resumes it. The time from the kill to the resumed step starting,
   against the bound lease + poll.
3. Throughput: 1,000 crashed runs of three steps (crashed after the first), drained
   by a ``durable.Worker`` at concurrency 1, 4 and 8: runs resumed per second.

Rows 1 and 3 run on PostgreSQL and on a SQLite file (the embedded default); row 2
on both too. Usage::

    .venv/bin/python benchmarks/bench_recovery.py [--quick] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from measure import database, paired, print_table, quartiles, timed

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import Registry, Resumption, Worker

HERE = Path(__file__).resolve().parent
TABLE = "bench_recovery"
registry = Registry()
crash_in: str | None = None  # the step this process dies in


class Crash(BaseException):
    """This process dying in a step (row 3 makes crashed runs in-process)."""


def step_body(key: str) -> Callable[[], int]:
    def run() -> int:
        if key == crash_in:
            if os.environ.get("BENCH_KILL") == "1":
                os.kill(os.getpid(), signal.SIGKILL)
            raise Crash()
        resumed = os.environ.get("BENCH_RESUMED")
        if resumed and key == "b":
            Path(resumed).write_text(repr(time.time()))
        return 1

    return run


@registry.workflow("small")
def small(step: Any, deps: Any, input: Any) -> int:
    return sum(step(step_body(key), key=key) for key in ("a", "b", "c"))


def steps(count: int) -> Callable[..., int]:
    def workflow(step: Any, deps: Any, *input: Any) -> int:
        return sum(step(lambda: 1, key=f"s{i}") for i in range(count))

    return workflow


# --- 1: what the record costs --------------------------------------------------------


def record_cost(url: str, pairs: int, chunk: int) -> list[list[str]]:
    store = SQLAlchemyKeyValueStore(url, table_name=TABLE)
    rows = []
    serial = iter(range(10**9))
    try:
        for count in (1, 10):
            plain, recorded = steps(count), Registry()
            recorded.register("steps", plain)

            def make(plain: Any = plain, recorded: Registry = recorded) -> tuple[Any, Any]:
                ids = [f"cost-{next(serial)}" for _ in range(chunk)]

                def registered() -> None:
                    for i in ids:
                        recorded.start(store, "steps", id=i + "r", input={"n": 1})

                def unregistered() -> None:
                    for i in ids:
                        durable.run(None, plain, id=i + "p", store=store)

                return timed(registered), timed(unregistered)

            found = paired(pairs, make)
            q1, q2, q3 = quartiles([1 / r for r in found.ratios()])  # registered / plain
            per_run = found.wall()[0] / chunk * 1e3
            rows.append([f"{count} step(s)", f"{per_run:.2f}", f"{q2:.2f}", f"{q1:.2f}-{q3:.2f}"])
    finally:
        store.close()
    return rows


# --- 2: latency from a crash to the resumed step ------------------------------------


def latency(url: str, trials: int, lease: float, poll: float) -> list[str]:
    env = os.environ | {"PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    store = SQLAlchemyKeyValueStore(url, table_name=TABLE)
    with tempfile.TemporaryDirectory() as folder, contextlib.closing(store):
        resumed = Path(folder) / "resumed"
        env["BENCH_RESUMED"] = str(resumed)
        worker = subprocess.Popen(
            [sys.executable, "-m", "sqlalchemy_awaitly", "worker",
             "--app", "bench_recovery:registry", "--url", url, "--table", TABLE,
             "--poll", str(poll), "--lease-ttl", str(lease)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        took = []
        try:
            for trial in range(trials):
                resumed.unlink(missing_ok=True)
                crash = [sys.executable, str(HERE / "bench_recovery.py"), "--crash", url]
                crash += [f"latency-{trial}-{time.time_ns()}", str(lease)]
                subprocess.run(crash, env=env | {"BENCH_KILL": "1"}, check=False, timeout=60)
                killed = time.time()
                deadline = time.monotonic() + lease + poll + 30
                while not resumed.exists() or not resumed.read_text():
                    if time.monotonic() > deadline or worker.poll() is not None:
                        sys.exit(f"the worker did not resume the run: {worker.stderr}")
                    time.sleep(0.005)
                took.append(float(resumed.read_text()) - killed)
                while durable.list_pending(store):  # let the worker finish it
                    if time.monotonic() > deadline:
                        sys.exit("the worker did not finish the run")
                    time.sleep(0.01)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    took.sort()
    mid = took[len(took) // 2]
    return [f"{lease:g} + {poll:g}", f"{mid:.2f}", f"{took[0]:.2f}", f"{took[-1]:.2f}"]


def crash_one(url: str, workflow_id: str, lease: float) -> None:
    """``--crash``: start a registered run and die (SIGKILL) in its second step."""
    global crash_in
    crash_in = "b"
    store = SQLAlchemyKeyValueStore(url, table_name=TABLE)
    registry.start(store, "small", id=workflow_id, input={"n": 1}, lease_ttl=lease)


# --- 3: throughput on crashed runs ---------------------------------------------------


def crashed_runs(store: SQLAlchemyKeyValueStore, count: int, tag: str) -> None:
    """``count`` runs that died in their second step (the first one saved)."""
    global crash_in
    crash_in = "b"
    try:
        for n in range(count):
            with contextlib.suppress(Crash):
                registry.start(store, "small", id=f"{tag}-{n}", input={"n": n})
    finally:
        crash_in = None


def throughput(url: str, count: int, concurrency: int) -> list[str]:
    store = SQLAlchemyKeyValueStore(url, table_name=TABLE, pool={"pool_size": concurrency + 2})
    try:
        crashed_runs(store, count, f"drain{concurrency}-{time.time_ns()}")
        heard, done = [0], threading.Event()
        lock = threading.Lock()

        def one(_: Resumption) -> None:
            with lock:
                heard[0] += 1
                if heard[0] == count:
                    done.set()

        worker = Worker(
            store, registry, concurrency=concurrency, poll_interval=0.05, on_resumption=one
        )
        started = time.perf_counter()
        thread = threading.Thread(target=worker.run)
        thread.start()
        finished = done.wait(600)
        took = time.perf_counter() - started
        worker.stop()
        thread.join()
        if not finished or durable.list_pending(store):
            sys.exit(f"the worker left runs: {heard[0]} of {count} resumed")
    finally:
        store.close()
    return [str(concurrency), f"{count}", f"{took:.2f}", f"{count / took:,.0f}"]


def clean(url: str) -> None:
    store = SQLAlchemyKeyValueStore(url, table_name=TABLE)
    with store.engine.begin() as conn:
        store.table.drop(conn, checkfirst=True)
    store.close()


def run(pg_url: str, quick: bool, lease: float, poll: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        backends = {"PostgreSQL": pg_url, "SQLite": f"sqlite:///{folder}/bench.db"}
        cost, waits, drains = [], [], []
        for name, url in backends.items():
            clean(url)
            try:
                cost += [[name, *row] for row in record_cost(url, 6 if quick else 16, 20)]
                waits.append([name, *latency(url, 3 if quick else 7, lease, poll)])
                for concurrency in (1, 4, 8):
                    drains.append([name, *throughput(url, 200 if quick else 1000, concurrency)])
            finally:
                clean(url)
    print_table(
        "1. recording type, version and input: registry.start / durable.run",
        ["backend", "workflow", "ms per registered run", "ratio", "p25-p75"],
        cost,
    )
    print_table(
        "2. crash to resumed step, a worker already running (seconds)",
        ["backend", "bound: lease + poll", "median", "min", "max"],
        waits,
    )
    print_table(
        "3. a Worker draining crashed 3-step runs",
        ["backend", "concurrency", "runs", "seconds", "runs/s"],
        drains,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="SQLAlchemy URL of a PostgreSQL database")
    parser.add_argument("--quick", action="store_true", help="fewer runs, about a minute")
    parser.add_argument("--lease", type=float, default=2.0, help="lease of the crashed run (s)")
    parser.add_argument("--poll", type=float, default=0.5, help="the worker's poll interval (s)")
    parser.add_argument("--crash", nargs=3, metavar=("URL", "ID", "LEASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.crash:
        crash_one(args.crash[0], args.crash[1], float(args.crash[2]))
        return
    with database(args.url) as url:
        run(url, args.quick, args.lease, args.poll)


if __name__ == "__main__":
    main()
