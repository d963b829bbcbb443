"""A worker process for the crash tests of waits: a run that sleeps, or backs off, for long.

    python tests/durable_wait_worker.py URL TABLE WORKFLOW_ID sleep|retry

``sleep``: one step, then ``step.sleep(600)``. ``retry``: a step that always
returns ``Err``, retried every 600 s. The test kills it while it waits.
"""

from __future__ import annotations

import sys
from typing import Any

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import Err, Retry

WAIT = 600.0
BACKOFF = Retry(4, backoff="fixed", initial_delay=WAIT, max_delay=WAIT, jitter=False)


def failing() -> Any:
    return Err({"type": "DOWN"})


def sleeper(step: Any, deps: Any) -> Any:
    step(lambda: "done", key="before")
    step.sleep(WAIT, key="nap")
    return step(lambda: Err("STOP"), key="stop")


def retrier(step: Any, deps: Any) -> Any:
    return step(failing, key="call", retry=BACKOFF)


def main() -> int:
    url, table, workflow_id, mode = sys.argv[1:5]
    with SQLAlchemyKeyValueStore(url, table_name=table) as store:
        print("started", flush=True)
        workflow = sleeper if mode == "sleep" else retrier
        durable.run(None, workflow, id=workflow_id, store=store, lease_ttl=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
