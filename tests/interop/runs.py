"""What the Python interop scripts share: note which runtime ran a step, run until a
killed holder's lease is gone, and print the result as one JSON line (as the Node.js
scripts do)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, text

from sqlalchemy_awaitly import durable


def until_free(run: Callable[[], Any]) -> Any:
    """``run()`` again while another process holds the id (at most about 10 s)."""
    for _ in range(100):
        result = run()
        if not (
            isinstance(result, durable.Err)
            and isinstance(result.error, durable.ConcurrentExecution)
        ):
            break
        time.sleep(0.1)  # a killed holder's lease: wait it out
    return result


def print_result(result: Any) -> None:
    if isinstance(result, durable.Ok):
        print(json.dumps({"ok": True, "value": result.value}))
    else:
        print(json.dumps({"ok": False, "error": result.error}, default=str))


class Effects:
    """Notes in ``interop_effects`` that Python ran a step of run ``workflow_id``."""

    def __init__(self, url: str, workflow_id: str) -> None:
        self._engine = create_engine(url)
        self._workflow_id = workflow_id

    def note(self, step: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO interop_effects (workflow_id, step, runtime) "
                    "VALUES (:id, :step, 'python')"
                ),
                {"id": self._workflow_id, "step": step},
            )

    def close(self) -> None:
        self._engine.dispose()
