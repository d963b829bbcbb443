"""A registry for the worker's process tests, and a starter of runs that crash.

    sqlalchemy-awaitly worker --app worker_app:registry ...   (PYTHONPATH=tests)
    python tests/worker_app.py URL TABLE ID...                  (start the runs)

Workflow ``orders`` runs steps a, b, c; each appends ``"<id> <step> <pid>"`` to
the file $WORKER_EFFECTS as it runs. The starter runs every id at once, one
thread each; with $WORKER_KILL_AT set to a step, the process SIGKILLs itself
once every run has reached that step (before noting it). An input with
``"slow": true`` makes step b note ``b-started`` and wait for the file
$WORKER_RELEASE to exist (a worker to stop mid-step).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore
from sqlalchemy_awaitly.durable import Registry

BOUND = 60.0
registry = Registry()
arrived: threading.Barrier | None = None  # the starter's runs, meeting at the kill


def note(workflow_id: str, what: str) -> None:
    with open(os.environ["WORKER_EFFECTS"], "a") as f:
        f.write(f"{workflow_id} {what} {os.getpid()}\n")


def effect(workflow_id: str, key: str, value: int, slow: bool = False) -> Any:
    def run() -> int:
        if arrived is not None and os.environ.get("WORKER_KILL_AT") == key:
            arrived.wait(BOUND)  # every run has its earlier steps stored
            os.kill(os.getpid(), signal.SIGKILL)
        if slow:
            note(workflow_id, f"{key}-started")
            deadline = time.monotonic() + BOUND
            while not os.path.exists(os.environ["WORKER_RELEASE"]):
                assert time.monotonic() < deadline, "never released"
                time.sleep(0.01)
        note(workflow_id, key)
        return value

    return run


@registry.workflow("orders")
def orders(step: Any, deps: Any, input: dict[str, Any]) -> int:
    i, slow = input["id"], bool(input.get("slow"))
    a = step(effect(i, "a", 1), key="a")
    b = step(effect(i, "b", 2, slow), key="b")
    return a + b + step(effect(i, "c", 3), key="c")


def start(url: str, table: str, ids: list[str], input: dict[str, Any]) -> None:
    global arrived
    arrived = threading.Barrier(len(ids))
    store = SQLAlchemyKeyValueStore(url, table_name=table)
    lease = float(os.environ.get("WORKER_LEASE_TTL", "60"))

    def one(workflow_id: str) -> None:
        registry.start(store, "orders", id=workflow_id, input={"id": workflow_id, **input},
                       lease_ttl=lease)  # fmt: skip

    threads = [threading.Thread(target=one, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()


if __name__ == "__main__":
    url, table, *ids = sys.argv[1:]
    start(url, table, ids, {"slow": os.environ.get("WORKER_SLOW") == "1"})


async_registry = Registry()  # the same workflow as asyncio code, for the worker's loop


@async_registry.workflow("orders")
async def orders_async(step: Any, deps: Any, input: dict[str, Any]) -> int:
    i = input["id"]
    a = await step(effect(i, "a", 1), key="a")
    b = await step(effect(i, "b", 2), key="b")
    return a + b + await step(effect(i, "c", 3), key="c")
