"""Two processes, one workflow id: one runs; a killed holder blocks for one lease at most."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
from durable_worker import effects
from sqlalchemy import create_engine, func, select
from test_durable_crash import start_worker

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import ConcurrentExecution, Err, Ok

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def effects_table(postgres: Any) -> Any:
    engine = create_engine(postgres.url)
    effects.create(engine, checkfirst=True)
    yield engine
    effects.drop(engine, checkfirst=True)
    engine.dispose()


def test_two_processes_racing_on_one_id_exactly_one_runs(
    postgres: Any, table_name: str, effects_table: Any
) -> None:
    for round_ in range(5):
        wid = f"race-{round_}"
        slow = ("--steps", "2", "--first-step-sleep", "1.0", "--lease", "3", "--wait-for-go")
        workers = [start_worker(postgres.url, table_name, wid, *slow) for _ in range(2)]
        # Both started up (imports, setup): now let them race. Without this, a
        # worker slow to start could find the other's run already finished.
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "started"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        answers = []
        for worker in workers:
            out, err = worker.communicate(timeout=60)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            assert lines, err
            answers.append(json.loads(lines[-1]))
        assert sorted(a["ok"] for a in answers) == [False, True], answers
        loser = next(a for a in answers if not a["ok"])
        assert (loser["type"], loser["reason"]) == ("CONCURRENT_EXECUTION", "cross-process")
        with effects_table.connect() as conn:
            ran = conn.execute(
                select(func.count()).where(effects.c.workflow_id == wid, effects.c.step == 0)
            ).scalar_one()
        assert ran == 1


def test_a_holder_killed_with_sigkill_blocks_the_id_for_at_most_one_lease(
    postgres: Any, table_name: str, effects_table: Any
) -> None:
    lease = 3.0
    wid = "killed-holder"
    worker = start_worker(
        postgres.url, table_name, wid, "--steps", "2", "--first-step-sleep", "30",
        "--lease", str(lease),
    )  # fmt: skip
    store = SQLAlchemyKeyValueStore(postgres.url, table_name=table_name)
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "started"
        while store.get(f"workflow:lock:{wid}") is None:  # it holds the lease
            time.sleep(0.01)
        time.sleep(1.0)  # and has renewed it at least once (every lease / 3)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        killed = time.monotonic()

        def body(step: Any, deps: Any) -> Any:
            step(lambda: "resumed", key="step-0")
            return step(lambda: "done", key="step-1")

        refusals = 0
        while True:
            result = durable.run(None, body, id=wid, store=store, lease_ttl=lease)
            if result != Err(ConcurrentExecution(wid, "cross-process")):
                break
            refusals += 1
            time.sleep(0.02)
        blocked = time.monotonic() - killed
        print(f"\nkilled holder blocked {wid} for {blocked:.2f} s (lease {lease} s)")
        assert result == Ok("done")
        assert refusals > 0  # the dead holder's lease did block it
        assert blocked <= lease + 0.2
    finally:
        store.close()
        if worker.poll() is None:
            worker.kill()
        worker.communicate()
