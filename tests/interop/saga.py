"""A saga (compensate= on steps), run by sqlalchemy-awaitly's durable.run; twin of saga.mjs.

python saga.py '{"url": ..., "table": ..., "id": ..., "crashIn": ...}'
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from runs import Effects, print_result, until_free

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import Err

config = json.loads(sys.argv[1])
effects = Effects(config["url"], config["id"])
note = effects.note


def crossing() -> Any:
    if config.get("crashIn") == "crash-here":
        os.kill(os.getpid(), signal.SIGKILL)
    return "crossed"


def saga(step: Any, deps: Any) -> Any:
    step(lambda: {"room": 7}, key="reserve", compensate=lambda v: note("undo-reserve"))
    step(lambda: "ch_1", key="charge", compensate=lambda v: note("undo-charge"))
    step(crossing, key="crash-here")
    return step(lambda: Err({"type": "NO_COURIER"}), key="ship")


store = SQLAlchemyKeyValueStore(config["url"], table_name=config["table"])
result = until_free(lambda: durable.run(None, saga, id=config["id"], store=store, lease_ttl=1))
print_result(result)
store.close()
effects.close()
