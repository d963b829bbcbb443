"""A child workflow (step.workflow), run by sqlalchemy-awaitly's durable.run; twin of
child.mjs.

python child.py '{"url": ..., "table": ..., "id": ..., "crashIn": ...}'
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from runs import Effects, print_result, until_free

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable

config = json.loads(sys.argv[1])
effects = Effects(config["url"], config["id"])
note = effects.note


def child(step: Any, deps: Any) -> Any:
    return step(lambda: note("c1") or {"total": 12}, key="c1")


def crossing() -> Any:
    if config.get("crashIn") == "crash-here":
        os.kill(os.getpid(), signal.SIGKILL)
    return "crossed"


def parent(step: Any, deps: Any) -> Any:
    bill = step.workflow(child, key="sub", lease_ttl=1)
    step(crossing, key="crash-here")
    return step(lambda: bill, key="final")


store = SQLAlchemyKeyValueStore(config["url"], table_name=config["table"])
result = until_free(lambda: durable.run(None, parent, id=config["id"], store=store, lease_ttl=1))
print_result(result)
store.close()
effects.close()
