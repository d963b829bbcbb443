"""SIGKILL a worker mid-run, then finish the run: which side effects happened how often.

Per trial: a fresh workflow id of 20 steps, each inserting one row into its
own table; a worker process is killed with SIGKILL at a random moment; a new
worker finishes the run once the dead one's lease has expired. Then every
step whose checkpoint was saved before the kill ran exactly once, the one
step in flight at most twice, transactional steps exactly once, and the dead
holder blocked the id for no longer than one lease.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from durable_worker import effects
from sqlalchemy import create_engine, select

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore

WORKER = Path(__file__).resolve().parent / "durable_worker.py"
STEPS = 20
TX_STEPS = {3, 7, 11, 15, 19}
LEASE = 0.5

pytestmark = pytest.mark.slow


def start_worker(url: str, table: str, wid: str, *extra: str) -> subprocess.Popen[str]:
    tx = ",".join(map(str, sorted(TX_STEPS)))
    args = [sys.executable, str(WORKER), url, table, wid, "--tx", tx, "--lease", str(LEASE)]
    return subprocess.Popen(
        [*args, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(WORKER.parent)},
    )


def finish(url: str, table: str, wid: str, *extra: str) -> tuple[dict[str, Any], float]:
    """Run new workers until one completes; how long the dead lease blocked the id."""
    began = time.monotonic()
    blocked = 0.0
    while True:
        worker = start_worker(url, table, wid, *extra)
        out, err = worker.communicate(timeout=60)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        assert lines, err
        answer = json.loads(lines[-1])
        if answer.get("reason") == "cross-process":
            blocked = time.monotonic() - began
            time.sleep(0.05)
            continue
        return answer, blocked


ALL_ONCE = Counter(range(STEPS))


def calibrate(url: str, table: str, *extra: str) -> float:
    """How long one uninterrupted run takes, from ``started`` to its outcome."""
    worker = start_worker(url, table, f"calibrate-{os.getpid()}", *extra)
    assert worker.stdout is not None
    assert worker.stdout.readline().strip() == "started"
    began = time.monotonic()
    worker.stdout.readline()
    elapsed = time.monotonic() - began
    worker.communicate(timeout=60)
    return elapsed


def effect_counts(engine: Any, wid: str) -> Counter[int]:
    with engine.connect() as conn:
        rows = conn.execute(select(effects.c.step).where(effects.c.workflow_id == wid))
        return Counter(rows.scalars())


def run_trials(url: str, table: str, trials: int, *extra: str) -> dict[str, Any]:
    engine = create_engine(url.replace("+aiosqlite", ""))
    effects.create(engine, checkfirst=True)
    store = SQLAlchemyKeyValueStore(url.replace("+aiosqlite", ""), table_name=table)
    rng = random.Random(20261125)
    figures: Counter[str] = Counter({"finished before the kill": 0})
    longest_block = 0.0
    stored_at_kill: list[int] = []
    try:
        run_time = calibrate(url, table, *extra)
        for trial in range(trials):
            wid = f"crash-{os.getpid()}-{trial}"
            worker = start_worker(url, table, wid, *extra)
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "started", worker.stderr
            time.sleep(rng.uniform(0.0, run_time))
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            rest = worker.stdout.read()
            worker.stdout.close()
            worker.stderr.close()  # type: ignore[union-attr]
            text = store.get(f"workflow:state:{wid}")
            saved = set(json.loads(text)["steps"]) if text else set()
            if '"ok": true' in rest or (not saved and effect_counts(engine, wid) == ALL_ONCE):
                figures["finished before the kill"] += 1  # its row deleted: nothing to resume
                continue
            stored_at_kill.append(len(saved))
            answer, blocked = finish(url, table, wid, *extra)
            assert answer == {"ok": True}, answer
            assert blocked <= LEASE + 0.5, f"a dead holder blocked {wid} for {blocked:.2f} s"
            longest_block = max(longest_block, blocked)

            counts = effect_counts(engine, wid)
            in_flight = next((i for i in range(STEPS) if f"step-{i}" not in saved), None)
            for i in range(STEPS):
                if f"step-{i}" in saved or i in TX_STEPS:
                    assert counts[i] == 1, (wid, i, counts[i], sorted(saved))
                elif i == in_flight:
                    assert 1 <= counts[i] <= 2, (wid, i, counts[i])
                else:
                    assert counts[i] == 1, (wid, i, counts[i], sorted(saved), dict(counts))
            twice = [i for i in range(STEPS) if counts[i] == 2]
            figures["resumed after the kill"] += 1
            figures["killed before any checkpoint"] += not saved
            figures["killed mid-run"] += 0 < len(saved) < STEPS
            figures["killed after the last checkpoint"] += len(saved) == STEPS
            figures["step ran twice (in flight at the kill)"] += len(twice)
    finally:
        store.close()
        effects.drop(engine, checkfirst=True)
        engine.dispose()
    report = dict(figures)
    report["checkpoints saved at kill (min/median/max)"] = (
        min(stored_at_kill),
        sorted(stored_at_kill)[len(stored_at_kill) // 2],
        max(stored_at_kill),
    )
    report["longest wait for the dead lease (s)"] = round(longest_block, 2)
    report["one uninterrupted run (s)"] = round(run_time, 3)
    print(f"\ncrash figures: {report}")
    return report


def test_sigkill_postgresql_sync_50_trials(postgres: Any, table_name: str) -> None:
    report = run_trials(postgres.url, table_name, 50)
    assert report["killed mid-run"] >= 10  # the kills did land inside runs


def test_sigkill_postgresql_async(postgres: Any, table_name: str) -> None:
    run_trials(postgres.url, table_name, 10, "--async")


def test_sigkill_sqlite_sync(sqlite_url: str, table_name: str) -> None:
    run_trials(sqlite_url, table_name, 10)
