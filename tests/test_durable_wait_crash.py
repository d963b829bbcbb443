"""SIGKILL a worker while it sleeps or backs off; the resumed run waits only the rest.

The worker (``durable_wait_worker.py``) waits 600 s on the real clock and is
killed once its row records the wait. The dead process's lease is then
removed, as its expiry would, and the run resumes here on a clock injected
at the real time: it waits what was left, and a retry goes on from the next
attempt with the budget it had.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fake_clock import FakeClock

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import DurableEvent, Err

WORKER = Path(__file__).resolve().parent / "durable_wait_worker.py"
WAIT = 600.0
BOUND = 60.0  # every wait for the worker: a bug fails the test instead of hanging it

pytestmark = pytest.mark.slow


def killed_while_waiting(url: str, table: str, workflow_id: str, mode: str) -> dict[str, Any]:
    """Start the worker, SIGKILL it once its row records the wait; that record."""
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), url, table, workflow_id, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(WORKER.parent)},
    )
    try:
        with SQLAlchemyKeyValueStore(url, table_name=table) as store:
            deadline = time.monotonic() + BOUND
            while True:
                assert worker.poll() is None, worker.communicate()
                assert time.monotonic() < deadline, "the worker never recorded its wait"
                raw = store.get(f"workflow:state:{workflow_id}")
                waits = json.loads(raw)["metadata"].get("sqlalchemyAwaitly") if raw else None
                if waits:
                    break
                time.sleep(0.05)
            worker.send_signal(signal.SIGKILL)
            worker.wait(BOUND)
            assert worker.returncode == -signal.SIGKILL
            store.delete(f"workflow:lock:{workflow_id}")  # as the dead lease's expiry would
            return dict(waits["waits"])
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(BOUND)


@pytest.fixture(params=["postgresql", "sqlite"])
def database(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres").url)
    return sqlite_url


def test_a_sleep_killed_midway_sleeps_only_the_rest(database: str, table_name: str) -> None:
    record = killed_while_waiting(database, table_name, "wf-killed-nap", "sleep")
    assert set(record) == {"nap"}
    clock = FakeClock(now=time.time())
    left = record["nap"]["until"] / 1000 - clock.now
    assert WAIT - BOUND < left <= WAIT
    with SQLAlchemyKeyValueStore(database, table_name=table_name) as store:
        result = durable.run(None, _sleeper, id="wf-killed-nap", store=store, clock=clock)
    assert result == Err("STOP")
    assert len(clock.waits) == 1 and abs(clock.waits[0] - left) < 0.01


def test_a_backoff_killed_midway_keeps_the_attempts_made(database: str, table_name: str) -> None:
    record = killed_while_waiting(database, table_name, "wf-killed-retry", "retry")
    assert record["call"]["attempt"] == 1
    clock = FakeClock(now=time.time())
    events: list[DurableEvent] = []
    calls: list[int] = []

    def retrier(step: Any, deps: Any) -> Any:
        def failing() -> Any:
            calls.append(1)
            return Err({"type": "DOWN"})

        from durable_wait_worker import BACKOFF

        return step(failing, key="call", retry=BACKOFF)

    with SQLAlchemyKeyValueStore(database, table_name=table_name) as store:
        result = durable.run(
            None, retrier, id="wf-killed-retry", store=store, clock=clock, on_event=events.append
        )
    assert result == Err({"type": "DOWN"})
    assert len(calls) == 3  # attempts 2 to 4: the dead process made the first
    assert WAIT - BOUND < clock.waits[0] <= WAIT and clock.waits[1:] == [WAIT, WAIT]
    assert [e.attempt for e in events if e.type == "step_retries_exhausted"] == [4]


def _sleeper(step: Any, deps: Any) -> Any:
    from durable_wait_worker import sleeper

    return sleeper(step, deps)
