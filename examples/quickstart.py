"""The seed's Quick Start with durable.run: a checkout that fails half-way, then resumes.

Runs on a SQLite file by default; set DATABASE_URL (or pass a URL as the first
argument) to use PostgreSQL. The first run fetches the user, then creating
the order fails; after the cause is fixed and the stored failure cleared, the
second run resumes: the user is not fetched again.
"""

from __future__ import annotations

import os
import sys
import tempfile
from types import SimpleNamespace
from typing import Any

from sqlalchemy_awaitly import create_postgres_persistence, durable
from sqlalchemy_awaitly.durable import Err

calls: list[str] = []
in_stock = False


def fetch_user(user_id: str) -> dict[str, Any]:
    calls.append("fetch-user")
    return {"id": user_id, "name": "Alice"}


def create_order(user: dict[str, Any]) -> Any:
    calls.append("create-order")
    if not in_stock:
        return Err("OUT_OF_STOCK")
    return {"id": "order-1", "userId": user["id"]}


def checkout(step: Any, deps: Any) -> Any:
    user = step(lambda: deps.fetch_user("123"), key="fetch-user")
    order = step(lambda: deps.create_order(user), key="create-order")
    return order


def main(url: str) -> int:
    global in_stock
    store = create_postgres_persistence(url)
    deps = SimpleNamespace(fetch_user=fetch_user, create_order=create_order)
    try:
        durable.delete_state(store, "checkout-123")
        first = durable.run(deps, checkout, id="checkout-123", store=store)
        pending = [run.id for run in durable.list_pending(store)]
        print(f"first run: {first}; ran {calls}; pending runs: {pending}")

        in_stock = True
        calls.clear()
        durable.retry_step(store, "checkout-123")  # clear the stored failure
        second = durable.run(deps, checkout, id="checkout-123", store=store)
        print(f"resumed: {second}; ran {calls} (fetch-user was not run again)")
        assert second.ok and calls == ["create-order"], "a stored step ran again"
        return 0
    finally:
        store.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:  # a new SQLite file each time, per user
        default = f"sqlite:///{os.path.join(folder, 'quickstart.db')}"
        url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DATABASE_URL", default)
        raise SystemExit(main(url))
