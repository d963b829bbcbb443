"""Cancellation with a CancelToken, run by sqlalchemy-awaitly's durable.run; twin of
cancel.mjs.

python cancel.py '{"url": ..., "table": ..., "id": ..., "cancelAfter": ..., "uncancel": ...}'
"""

from __future__ import annotations

import json
import sys
from typing import Any

from runs import Effects, print_result

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable

config = json.loads(sys.argv[1])
effects = Effects(config["url"], config["id"])
note = effects.note
token = durable.CancelToken()


def step_of(key: str) -> Any:
    def run() -> Any:
        note(key)
        if config.get("cancelAfter") == key:
            token.cancel("operator")
        return key.upper()

    return run


def flow(step: Any, deps: Any) -> Any:
    step(step_of("s1"), key="s1")
    step(step_of("s2"), key="s2")
    return step(step_of("s3"), key="s3")


store = SQLAlchemyKeyValueStore(config["url"], table_name=config["table"])
if config.get("uncancel"):
    durable.uncancel(store, config["id"])
result = durable.run(None, flow, id=config["id"], store=store, lease_ttl=1, cancel=token)
if isinstance(result, durable.Err) and isinstance(result.error, durable.WorkflowCancelled):
    print(json.dumps({"ok": False, "cancelled": result.error.type}))
else:
    print_result(result)
store.close()
effects.close()
