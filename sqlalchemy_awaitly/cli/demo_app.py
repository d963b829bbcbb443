"""The demo's application: a checkout workflow in a :class:`durable.Registry`.

Both of the demo's processes import it: ``demo-worker`` starts a run through
the registry (and, with ``crash_at`` set, is killed half-way), and
``sqlalchemy-awaitly worker --app sqlalchemy_awaitly.cli.demo_app:registry``
resumes it. Each step writes its side effect to ``awaitly_demo_effects`` in the
same database ($DATABASE_URL), so the demo can count them.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

from sqlalchemy import Column, Engine, Integer, MetaData, Table, Text, create_engine, insert

from ..config import url_of
from ..durable import Registry

STEPS = ["fetch-user", "reserve-stock", "charge-card", "create-order", "send-confirmation"]

effects = Table(
    "awaitly_demo_effects",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workflow_id", Text, nullable=False),
    Column("step", Text, nullable=False),
    Column("pid", Integer, nullable=False),
)

registry = Registry()
crash_at: str | None = None  # set by the demo's first process: it is killed at this step


def effects_engine(url: str) -> Engine:
    return create_engine(url_of(url))


class Shop:
    """The checkout's deps: where its side effects go, in this process."""

    _made: Shop | None = None

    def __init__(self, url: str) -> None:
        self.engine = effects_engine(url)
        self.pid = os.getpid()

    @classmethod
    def of_this_process(cls) -> Shop:
        """One per process (the deps factory runs for every resumed run)."""
        if cls._made is None:
            cls._made = cls(os.environ["DATABASE_URL"])
        return cls._made

    def say(self, text: str) -> None:
        print(text, flush=True)

    def effect(self, workflow_id: str, step: str, value: Any) -> Any:
        def run() -> Any:
            if crash_at == step:
                self.say(f"{step:<18} the process (pid {self.pid}) is killed here: SIGKILL")
                sys.stdout.flush()
                os.kill(self.pid, signal.SIGKILL)
            with self.engine.begin() as conn:
                conn.execute(
                    insert(effects).values(workflow_id=workflow_id, step=step, pid=self.pid)
                )
            time.sleep(0.2)  # something to watch
            self.say(f"{step:<18} ran in pid {self.pid} -> {json.dumps(value)}")
            return value

        return run


@registry.workflow("checkout", deps=Shop.of_this_process)
def checkout(step: Any, shop: Shop, order: dict[str, Any]) -> Any:
    """Five steps; ``charge-card`` writes its effect and its checkpoint in one transaction."""
    workflow_id = order["id"]

    def charge(conn: Any) -> Any:
        conn.execute(
            insert(effects).values(workflow_id=workflow_id, step="charge-card", pid=shop.pid)
        )
        value = {"charge": "ch_1", "amount": order["amount"]}
        shop.say(
            f"{'charge-card':<18} ran in pid {shop.pid} -> {json.dumps(value)} (in one transaction)"
        )
        return value

    def effect(name: str, value: Any) -> Any:
        return shop.effect(workflow_id, name, value)

    user = step(effect("fetch-user", {"id": order["user"], "name": "Alice"}), key="fetch-user")
    step(effect("reserve-stock", {"sku": order["sku"], "reserved": 1}), key="reserve-stock")
    step.transaction(charge, key="charge-card")
    made = step(effect("create-order", {"id": "order-1", "userId": user["id"]}), key="create-order")
    step(effect("send-confirmation", {"to": user["name"], "order": made["id"]}),
         key="send-confirmation")  # fmt: skip
    return made
