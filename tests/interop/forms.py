"""The step forms (retry, timeout, sleep, try_, from_result), run by sqlalchemy-awaitly's
durable.run; twin of forms.mjs.

python forms.py '{"url": ..., "table": ..., "id": ..., "crashIn": ..., "failing": ...}'
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
from sqlalchemy_awaitly.durable import Err, Ok, Retry, Timeout

config = json.loads(sys.argv[1])
effects = Effects(config["url"], config["id"])
note = effects.note


flaky_calls = 0


def flaky() -> Any:
    global flaky_calls
    note("flaky")
    flaky_calls += 1
    return Err({"type": "BUSY"}) if flaky_calls < 2 else "ok-after-retry"


def slow() -> Any:
    note("slow")
    time.sleep(0.5)
    return "late"


def parsed() -> Any:
    note("parsed")
    return json.loads("42")


def found() -> Any:
    note("found")
    return Ok("v")


def crossing() -> Any:
    if config.get("crashIn") == "crash-here":
        os.kill(os.getpid(), signal.SIGKILL)
    note("crash-here")
    return "crossed"


def final() -> Any:
    note("final")
    return "done"


def forms(step: Any, deps: Any) -> Any:
    fixed = Retry(3, backoff="fixed", initial_delay=0.01, jitter=False)
    step(flaky, key="flaky", retry=fixed)
    step(slow, key="slow", timeout=Timeout(0.05, on_timeout="option"))
    step.sleep(0.01, key="nap")
    step.try_(parsed, key="parsed", error="PARSE")
    step.from_result(found, key="found", error="NOT_FOUND")
    step(crossing, key="crash-here")
    return step(final, key="final")


def failing(step: Any, deps: Any) -> Any:
    if config["failing"] == "timeout":
        return step(lambda: time.sleep(0.5) or "late", key="slow-err", timeout=0.05)
    fixed = Retry(2, backoff="fixed", initial_delay=0.01, jitter=False)
    return step(lambda: Err({"type": "BOOM"}), key="exhausted", retry=fixed)


store = SQLAlchemyKeyValueStore(config["url"], table_name=config["table"])
result = until_free(
    lambda: durable.run(
        None, failing if config.get("failing") else forms, id=config["id"], store=store, lease_ttl=1
    )
)
print_result(result)
store.close()
effects.close()
