"""A worker process for the kill tests of the step forms: SIGKILLed at a chosen point.

    python tests/durable_kill_worker.py URL TABLE WORKFLOW_ID MODE EFFECTS [kill]

Each step, member and compensation appends its name to the EFFECTS file as it
runs. With ``kill`` the process SIGKILLs itself at the mode's point:

- ``group``: in member b of a keyed ``step.all``, once the row records member a;
- ``compensation``: in the second compensation, after the first has run;
- ``child``: as the parent sends the checkpoint of its child's step (the child
  has ended and stored its result);
- ``sleepy``: not at all: step s2 notes ``s2-started`` and sleeps, for the test to
  stop the process (SIGTERM) mid-step.
Without it the run goes to its end and prints its result.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import ConcurrentExecution, Err

url, table, workflow_id, mode, effects = sys.argv[1:6]
kill = sys.argv[6:] == ["kill"]
BOUND = 30.0


def note(name: str) -> None:
    with open(effects, "a") as f:
        f.write(name + "\n")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Store(SQLAlchemyKeyValueStore):
    """The store, but ``child`` dies as the parent's checkpoint of the child goes out."""

    def set_guarded(self, key: str, value: str, ttl: Any = None, **guard: Any) -> bool:
        if kill and mode == "child" and key.endswith(workflow_id) and '"sub":' in value:
            die()
        return super().set_guarded(key, value, ttl, **guard)


store = Store(url, table_name=table)


def recorded(member: str) -> bool:
    raw = store.get(f"workflow:state:{workflow_id}")
    section = json.loads(raw)["metadata"].get("sqlalchemyAwaitly", {}) if raw else {}
    return member in section.get("groups", {}).get("g", {})


def member(name: str) -> Any:
    def run() -> Any:
        if kill and name == "b":
            deadline = time.monotonic() + BOUND
            while not recorded("a"):
                assert time.monotonic() < deadline, "member a was never recorded"
                time.sleep(0.01)
            die()
        note(name)
        return name.upper()

    return run


def undo(name: str) -> Any:
    def run(value: Any) -> None:
        if kill and name == "reserve":
            die()
        note(f"undo-{name}")

    return run


def child(step: Any, deps: Any) -> Any:
    return step(lambda: note("c1") or "child-done", key="c1")


def workflow(step: Any, deps: Any) -> Any:
    if mode == "group":
        step.all({"a": member("a"), "b": member("b")}, key="g")
        return step(lambda: Err("STOP"), key="stop")
    if mode == "compensation":
        step(lambda: note("reserve") or 1, key="reserve", compensate=undo("reserve"))
        step(lambda: note("charge") or 2, key="charge", compensate=undo("charge"))
        return step(lambda: Err("NO_COURIER"), key="ship")
    if mode == "sleepy":
        step(lambda: note("s1") or 1, key="s1")

        def s2() -> Any:
            note("s2-started")
            if kill:
                time.sleep(BOUND)
            return 2

        return step(s2, key="s2")
    got = step.workflow(child, key="sub")
    return step(lambda: note("p2") or got, key="p2")


for _ in range(100):  # a killed holder's lease: wait it out
    result = durable.run(None, workflow, id=workflow_id, store=store, lease_ttl=1)
    if not (isinstance(result, Err) and isinstance(result.error, ConcurrentExecution)):
        break
    time.sleep(0.1)
print(json.dumps({"ok": result.ok, "value": getattr(result, "value", None)}, default=str))
store.close()
