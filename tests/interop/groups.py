"""Keyed parallel groups (step.all, step.map), run by sqlalchemy-awaitly's durable.run;
twin of groups.mjs.

python groups.py '{"url": ..., "table": ..., "id": ..., "crashIn": ..., "failing": ...}'

crashIn "group": member b SIGKILLs this process once the row records that member a
ended (so a resumed Python run runs only b again).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

from runs import Effects, print_result, until_free

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import Err, Ok

config = json.loads(sys.argv[1])
effects = Effects(config["url"], config["id"])
note = effects.note
store = SQLAlchemyKeyValueStore(config["url"], table_name=config["table"])


def member_a() -> Any:
    note("a")
    return Ok(1)


def a_recorded() -> bool:
    raw = store.get(f"workflow:state:{config['id']}")
    section = json.loads(raw)["metadata"].get("sqlalchemyAwaitly", {}) if raw else {}
    return "a" in section.get("groups", {}).get("both", {})


def member_b() -> Any:
    if config.get("crashIn") == "group":
        deadline = time.monotonic() + 30
        while not a_recorded():
            if time.monotonic() > deadline:
                raise TimeoutError("member a was never recorded")
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)
    note("b")
    return "two"


def tens(x: int) -> Any:
    note(f"m{x}")
    return x * 10


def crossing() -> Any:
    if config.get("crashIn") == "crash-here":
        os.kill(os.getpid(), signal.SIGKILL)
    note("crash-here")
    return "crossed"


def groups(step: Any, deps: Any) -> Any:
    both = step.all({"a": member_a, "b": member_b}, key="both")
    mapped = step.map([1, 2, 3], tens, key="tens", concurrency=2)
    step(crossing, key="crash-here")
    return step(lambda: {"both": both, "tens": mapped}, key="final")


def failing(step: Any, deps: Any) -> Any:
    return step.map([1, 2, 3], lambda x: Err({"type": "TWO"}) if x == 2 else x, key="m")


result = until_free(
    lambda: durable.run(
        None,
        failing if config.get("failing") else groups,
        id=config["id"],
        store=store,
        lease_ttl=1,
    )
)
print_result(result)
store.close()
effects.close()
