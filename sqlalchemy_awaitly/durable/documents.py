"""The JSON documents the runner writes: workflow snapshots and idempotency records.

Field names and order are awaitly 1.35's (``wire-format.md``), so Node.js
services resume what Python wrote and the other way round.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from .. import json_text

IDEMPOTENCY_PREFIX = "idem:"
"""Idempotency records live under ``<state prefix>idem:<key>``, as awaitly writes them."""


def idempotency_key_of(state_prefix: str, idempotency_key: str) -> str:
    return f"{state_prefix}{IDEMPOTENCY_PREFIX}{idempotency_key}"


def now_iso() -> str:
    """UTC, milliseconds, ``Z``: the form awaitly writes ``lastUpdated`` in."""
    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def to_json(document: Any) -> str:
    return json_text.dumps(document)


class EncodedSteps:
    """The ``steps`` object of a snapshot, each outcome encoded once.

    Every checkpoint rewrites the whole snapshot (that is the format Node.js
    reads), but the outcomes already recorded need not be serialised again:
    a 1,000-step run otherwise spends a third of its time re-encoding them.
    """

    def __init__(self) -> None:
        self._parts: dict[str, str] = {}

    def put(self, key: str, outcome: Any) -> None:
        self._parts[key] = f"{to_json(key)}:{to_json(outcome)}"

    def drop(self, key: str) -> None:
        self._parts.pop(key, None)

    def json(self) -> str:
        return "{" + ",".join(self._parts.values()) + "}"


_SNAPSHOT_HEAD = '{"formatVersion":1,"workflowName":'


def workflow_snapshot(
    workflow_id: str,
    steps: EncodedSteps,
    last_step_key: str,
    metadata: dict[str, Any],
) -> str:
    """The whole state after a step: every outcome so far, and the step just recorded.

    The same text as ``to_json`` of the document, built from the encoded steps.
    """
    execution = {"status": "running", "lastUpdated": now_iso(), "currentStepId": last_step_key}
    return (
        f"{_SNAPSHOT_HEAD}{to_json(workflow_id)},"
        f'"steps":{steps.json()},'
        f'"execution":{to_json(execution)},'
        f'"metadata":{to_json({**metadata, "lastStepKey": last_step_key})}}}'
    )


def idempotency_record(
    workflow_id: str,
    idempotency_key: str,
    input_value: Any,
    final_value: Any = None,
    *,
    completed: bool = False,
    claim_token: str | None = None,
) -> str:
    """``running`` while the run goes on; ``completed`` with ``finalResult`` after success.

    ``claim_token`` makes a claim's marker unique, so a claim whose reply was
    lost is recognised by reading the row back (awaitly keeps unknown keys).
    """
    stamp = now_iso()
    execution: dict[str, Any] = {"status": "completed" if completed else "running"}
    execution["lastUpdated"] = stamp
    if completed:
        execution["completedAt"] = stamp
    metadata: dict[str, Any] = {"workflowId": workflow_id, "idempotencyKey": idempotency_key}
    if input_value is not None:
        metadata["input"] = input_value
    if completed:
        metadata["finalResult"] = {"ok": True, "value": final_value}
    if claim_token is not None:
        metadata["claimToken"] = claim_token
    return to_json({"formatVersion": 1, "steps": {}, "execution": execution, "metadata": metadata})


def lease_value(owner_token: str) -> str:
    """A lease row's value; a Node.js store sharing leases must write the same."""
    return to_json({"ownerToken": owner_token})


def same_input(stored: Any, given: Any) -> bool:
    """Inputs compare as JavaScript sees them: dict order, and 1 against 1.0, are no
    difference (Node.js writes an integral float as an integer)."""
    return json.dumps(_js_numbers(stored), sort_keys=True) == json.dumps(
        _js_numbers(given), sort_keys=True
    )


def _js_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    return value
