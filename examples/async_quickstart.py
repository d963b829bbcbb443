"""The Quick Start on asyncio: ``durable.run_async`` over an async store.

Runs on SQLite through aiosqlite by default (``pip install
"sqlalchemy-awaitly[aiosqlite]"``); set DATABASE_URL (or pass a URL as the first
argument) to use PostgreSQL (psycopg 3's async mode). The first run fetches the
user and fails to create the order; after the stored failure is cleared, the
second run resumes without fetching the user again.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from typing import Any

from sqlalchemy_awaitly import create_async_postgres_persistence, durable
from sqlalchemy_awaitly.durable import Err

calls: list[str] = []
in_stock = False


async def fetch_user(user_id: str) -> dict[str, Any]:
    calls.append("fetch-user")
    return {"id": user_id, "name": "Alice"}


async def create_order(user: dict[str, Any]) -> Any:
    calls.append("create-order")
    if not in_stock:
        return Err("OUT_OF_STOCK")
    return {"id": "order-1", "userId": user["id"]}


async def checkout(step: Any, deps: Any) -> Any:
    user = await step(lambda: fetch_user("123"), key="fetch-user")
    return await step(lambda: create_order(user), key="create-order")


async def main(url: str) -> int:
    global in_stock
    store = await create_async_postgres_persistence(url)  # a coroutine: await it
    try:
        first = await durable.run_async(None, checkout, id="checkout-123", store=store)
        print(f"first run: {first}; ran {calls}")

        in_stock = True
        calls.clear()
        await durable.retry_step_async(store, "checkout-123")  # clear the stored failure
        second = await durable.run_async(None, checkout, id="checkout-123", store=store)
        print(f"resumed: {second}; ran {calls} (fetch-user was not run again)")
        assert second.ok and calls == ["create-order"], "a stored step ran again"
        return 0
    finally:
        await store.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        default = f"sqlite:///{os.path.join(folder, 'quickstart.db')}"
        url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DATABASE_URL", default)
        raise SystemExit(asyncio.run(main(url)))
