"""The run-state model, as ``list_pending`` and the CLI's ``list`` (table and JSON) show it.

A worker process holds a run in a step; while it lives the run is running,
and once it is SIGKILLed and its lease has expired, crashed. A stored step
failure is failed, an unreadable row corrupt: the same word in every listing.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from test_cli import cli, url  # noqa: F401  (url: the fixture, an empty database per backend)

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import Err, RunState
from sqlalchemy_awaitly.persistence import StatePersistence

pytestmark = pytest.mark.slow  # end to end, in processes of its own: pytest -m slow
LEASE = 1.0
# Runs "held" with a short lease; its second step says so on stdout, then waits forever.
WORKER = """
import sys, time
from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.persistence import StatePersistence

state = StatePersistence(SQLAlchemyKeyValueStore(sys.argv[1]))

def held(step, deps):
    step(lambda: "done", key="first")
    step(lambda: (print("in step two", flush=True), time.sleep(600)), key="second")

durable.run(None, held, id="held", store=state, lease_ttl=float(sys.argv[2]))
"""


def listed(url: str) -> dict[str, tuple[str, str]]:  # noqa: F811
    """id -> (state in the table, state in the JSON), from the CLI."""
    table = cli("list", "--url", url)
    as_json = cli("list", "--url", url, "--json")
    assert table.returncode in (0, 6) and as_json.returncode == table.returncode, table.stderr
    from_table = {line.split()[0]: line.split()[1] for line in table.stdout.splitlines()[1:]}
    from_json = {run["id"]: run["state"] for run in json.loads(as_json.stdout)}
    assert from_table.keys() == from_json.keys()
    return {k: (from_table[k], from_json[k]) for k in from_table}


def states(state: StatePersistence) -> dict[str, RunState]:
    return {run.id: run.state for run in durable.list_pending(state)}


def wait_for_line(worker: subprocess.Popen[str], seconds: float) -> str:
    assert worker.stdout is not None
    ready, _, _ = select.select([worker.stdout], [], [], seconds)
    assert ready, f"the worker said nothing in {seconds} s"
    return worker.stdout.readline()


def test_running_then_crashed_failed_and_corrupt(url: str) -> None:  # noqa: F811
    store = SQLAlchemyKeyValueStore(url)
    state = StatePersistence(store)
    worker: subprocess.Popen[str] | None = None
    try:
        durable.run(None, lambda step, deps: step(lambda: Err("DECLINED"), key="pay"),
                    id="declined", store=state)  # fmt: skip
        store.set(state.key("unreadable"), "{not json")
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, url, str(LEASE)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert wait_for_line(worker, 60) == "in step two\n"
        assert states(state) == {
            "held": RunState.RUNNING,
            "declined": RunState.FAILED,
            "unreadable": RunState.CORRUPT,
        }
        assert listed(url) == {
            "held": ("running", "running"),
            "declined": ("failed", "failed"),
            "unreadable": ("corrupt", "corrupt"),
        }
        # The heartbeat keeps the lease alive past its TTL while the worker lives.
        time.sleep(LEASE * 1.5)
        assert states(state)["held"] is RunState.RUNNING

        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        deadline = time.monotonic() + LEASE + 10  # the lease expires by the database clock
        while states(state)["held"] is RunState.RUNNING:
            assert time.monotonic() < deadline, "the killed run's lease never expired"
            time.sleep(0.1)
        assert states(state)["held"] is RunState.CRASHED
        assert listed(url)["held"] == ("crashed", "crashed")

        # Resumed, it finishes and leaves no row to list.
        ran: list[str] = []

        def held(step: Any, deps: Any) -> None:
            step(lambda: ran.append("first"), key="first")
            step(lambda: ran.append("second"), key="second")

        assert isinstance(durable.run(None, held, id="held", store=state), durable.Ok)
        assert ran == ["second"] and "held" not in states(state)
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)
        store.close()
