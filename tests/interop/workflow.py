"""The interop checkout workflow, run by sqlalchemy-awaitly's durable.run (twin of workflow.mjs).

python workflow.py '{"url": ..., "table": ..., "id": ..., "crashIn": ..., ...}'
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from runs import print_result, until_free
from sqlalchemy import create_engine, text

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable

config = json.loads(sys.argv[1])
effects = create_engine(config["url"])


def effect(key: str, value: Any) -> Any:
    def fn() -> Any:
        if config.get("crashIn") == key:
            os.kill(os.getpid(), signal.SIGKILL)
        with effects.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO interop_effects (workflow_id, step, runtime) "
                    "VALUES (:id, :step, 'python')"
                ),
                {"id": config["id"], "step": key},
            )
        return value

    return fn


def checkout(step: Any, deps: Any) -> Any:
    user = step(effect("fetch-user", {"id": "123", "name": "Alice"}), key="fetch-user")
    order = step(
        effect("create-order", {"id": "order-1", "userId": user["id"]}), key="create-order"
    )
    mail = step(effect("send-email", {"to": user["name"], "order": order["id"]}), key="send-email")
    return {"user": user, "order": order, "mail": mail}


store = SQLAlchemyKeyValueStore(config["url"], table_name=config["table"])
result = until_free(
    lambda: durable.run(
        None,
        checkout,
        id=config["id"],
        store=store,
        lease_ttl=config.get("lockTtlMs", 1000) / 1000,
        idempotency_key=config.get("idempotencyKey"),
        input=config.get("input"),
    )
)
print_result(result)
store.close()
effects.dispose()
