"""The interop checkout (workflow.mjs's steps) in a Registry, for the Python worker to
recover runs awaitly started with the documented metadata::

    sqlalchemy-awaitly worker --app checkout_app:registry   (PYTHONPATH=tests/interop,
                                                            INTEROP_URL=the database)

Each step notes ``python <input note>`` as its runtime, so the test sees both that
Python ran it and with which recorded input.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine, create_engine, text

from sqlalchemy_awaitly.durable import Registry

registry = Registry()


def effects() -> Engine:
    return create_engine(os.environ["INTEROP_URL"])


@registry.workflow("checkout", version=1, deps=effects)
def checkout(step: Any, engine: Engine, input: dict[str, Any]) -> Any:
    workflow_id, runtime = input["id"], f"python {input['note']}"

    def effect(key: str, value: Any) -> Any:
        def fn() -> Any:
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO interop_effects (workflow_id, step, runtime) "
                        "VALUES (:id, :step, :runtime)"
                    ),
                    {"id": workflow_id, "step": key, "runtime": runtime},
                )
            return value

        return fn

    try:
        user = step(effect("fetch-user", {"id": "123", "name": "Alice"}), key="fetch-user")
        order = step(
            effect("create-order", {"id": "order-1", "userId": user["id"]}), key="create-order"
        )
        mail = step(
            effect("send-email", {"to": user["name"], "order": order["id"]}), key="send-email"
        )
        return {"user": user, "order": order, "mail": mail}
    finally:
        engine.dispose()
