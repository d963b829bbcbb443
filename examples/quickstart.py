"""The seed's Quick Start, store side: checkpoint a checkout workflow and resume it.

Runs on a SQLite file by default; set DATABASE_URL (or pass a URL as the first
argument) to use PostgreSQL. The durable runner itself (``durable.run``) is
built on exactly these calls.
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import datetime, timezone
from typing import Any

from sqlalchemy_awaitly import create_postgres_persistence


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def snapshot(run_id: str, steps: dict[str, Any], current: str) -> dict[str, Any]:
    return {
        "formatVersion": 1,
        "workflowName": run_id,
        "steps": steps,
        "execution": {"status": "running", "lastUpdated": now(), "currentStepId": current},
        "metadata": {"version": 1, "lastStepKey": current},
    }


def main() -> int:
    default = f"sqlite:///{os.path.join(tempfile.gettempdir(), 'awaitly-quickstart.db')}"
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DATABASE_URL", default)
    persistence = create_postgres_persistence(url)
    run_id = "checkout-123"
    try:
        persistence.delete(run_id)
        # First run: fetch-user completes and is checkpointed, then the process "crashes".
        steps: dict[str, Any] = {
            "fetch-user": {"ok": True, "value": {"id": "123", "name": "Alice"}}
        }
        persistence.save(run_id, snapshot(run_id, steps, "fetch-user"))
        print(f"saved after fetch-user; pending runs: {persistence.list()}")

        # Second run: load the checkpoint, skip what is stored, run the rest.
        stored = persistence.load(run_id)
        assert stored is not None
        done = list(stored["steps"])
        print(f"resumed {run_id}: already done {done}, not run again")
        user = stored["steps"]["fetch-user"]["value"]
        stored["steps"]["create-order"] = {
            "ok": True,
            "value": {"id": "order-1", "userId": user["id"]},
        }
        persistence.save(run_id, snapshot(run_id, stored["steps"], "create-order"))
        order = persistence.load(run_id)["steps"]["create-order"]["value"]  # type: ignore[index]
        persistence.delete(run_id)  # success: the row goes, as awaitly does
        pending = persistence.list()
        print(f"completed: order {order['id']} for user {order['userId']}; pending: {pending}")
        return 0
    finally:
        persistence.close()


if __name__ == "__main__":
    raise SystemExit(main())
