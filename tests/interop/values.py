"""Resume the run values.mjs wrote, record one step, and die holding the row (twin of values.mjs).

python values.py '{"url": ..., "table": ..., "id": ...}'
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable

config = json.loads(sys.argv[1])


def never(key: str) -> Any:
    def fn() -> Any:
        print(json.dumps({"ran": key}), flush=True)  # a recorded step must not run again
        sys.exit(3)

    return fn


def workflow(step: Any, deps: Any) -> Any:
    values = {key: step(never(key), key=key) for key in ("cut", "big", "huge", "floats", "deep")}
    assert values["cut"] == "Zoë \ud83d", values["cut"]
    # JavaScript writes 2**60 as its shortest round-trip digits, 1152921504606847000:
    # a different int to Python, the same double to JavaScript.
    assert values["big"] == 1152921504606847000 and float(values["big"]) == 2**60
    step(lambda: "from python", key="python-step")
    os.kill(os.getpid(), signal.SIGKILL)  # leave the row as Python rewrote it


store = SQLAlchemyKeyValueStore(config["url"], table_name=config["table"])
for _ in range(100):
    result = durable.run(None, workflow, id=config["id"], store=store, lease_ttl=1.0)
    if type(getattr(result, "error", None)).__name__ != "ConcurrentExecution":
        break
    time.sleep(0.1)  # a killed holder's lease: wait it out
print(json.dumps({"unexpected": repr(result)}), flush=True)
sys.exit(4)
