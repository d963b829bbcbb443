"""The JSON documents of workflow state (see wire-format.md), read strictly.

A row that cannot be read is reported with its key, never treated as absent:
an absent row would make the runner start over and repeat side effects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from . import json_text
from .errors import CorruptStateError, InvalidInputError

Snapshot = dict[str, Any]
SNAPSHOT_FORMAT_VERSION = 1


def encode_snapshot(snapshot: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> str:
    """JSON text of a format-1 snapshot, with ``metadata`` merged into its own."""
    document = dict(snapshot)
    problem = _snapshot_problem(document)
    if problem:
        raise InvalidInputError(f"not a workflow snapshot: {problem}")
    if metadata is not None:
        document["metadata"] = {**document.get("metadata", {}), **metadata}
    try:
        return json_text.dumps(document)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"workflow snapshot is not JSON-serialisable: {e}") from e


def decode_state(key: str, text: str) -> Snapshot:
    """Parse a stored row into a format-1 snapshot; the older format is converted.

    Anything that is not a document awaitly or this package wrote (not JSON,
    ``NaN`` or ``Infinity``, nesting deeper than anyone writes, fields of the
    wrong type) is :class:`CorruptStateError` for this row alone.
    """
    try:
        document = json_text.loads(text)
    except ValueError as e:  # TooDeep included
        raise CorruptStateError(key, f"not valid JSON ({e})") from None
    if not isinstance(document, dict):
        raise CorruptStateError(key, f"expected a JSON object, got {type(document).__name__}")
    if "formatVersion" in document:
        problem = _snapshot_problem(document)
        if problem:
            raise CorruptStateError(key, problem)
        return document
    if document.get("version") == 1 and isinstance(document.get("entries"), dict):
        return _from_serialized_state(key, document)
    raise CorruptStateError(
        key, "neither a WorkflowSnapshot (formatVersion 1) nor a SerializedState (version 1)"
    )


def _snapshot_problem(document: Mapping[str, Any]) -> str | None:
    version = document.get("formatVersion")
    if version != SNAPSHOT_FORMAT_VERSION or isinstance(version, bool):
        return f"formatVersion {version!r} is not one this version reads (1)"
    if not isinstance(document.get("steps"), dict):
        return "'steps' is not an object"
    for step_key, outcome in document["steps"].items():
        if not isinstance(outcome, dict) or not isinstance(outcome.get("ok"), bool):
            return f"step {step_key!r} has no boolean 'ok'"
    if not isinstance(document.get("execution"), dict):
        return "'execution' is not an object"
    if not isinstance(document.get("metadata", {}), dict):
        return "'metadata' is not an object"
    return None


def _from_serialized_state(key: str, document: Mapping[str, Any]) -> Snapshot:
    """The older Node.js adapter format (``version``/``entries``) as a snapshot."""
    steps: dict[str, Any] = {}
    for step_key, entry in document["entries"].items():
        result = entry.get("result") if isinstance(entry, dict) else None
        if not isinstance(result, dict) or not isinstance(result.get("ok"), bool):
            raise CorruptStateError(key, f"entry {step_key!r} has no result with a boolean 'ok'")
        if result["ok"]:
            steps[step_key] = {"ok": True, "value": result.get("value")}
            continue
        meta = entry.get("meta") or {}
        origin = meta.get("origin", "result") if isinstance(meta, dict) else "result"
        steps[step_key] = {
            "ok": False,
            "error": result.get("error"),
            "cause": _cause(result.get("cause")),
            "meta": {"origin": origin if origin in ("result", "throw") else "result"},
        }
    metadata = document.get("metadata")
    metadata = dict(metadata) if isinstance(metadata, dict) else {}
    execution: dict[str, Any] = {"status": "running"}
    if isinstance(metadata.get("updatedAt"), str):
        execution["lastUpdated"] = metadata["updatedAt"]
    last = metadata.get("lastStepKey")
    if isinstance(last, str):
        execution["currentStepId"] = last
    return {
        "formatVersion": SNAPSHOT_FORMAT_VERSION,
        "steps": steps,
        "execution": execution,
        "metadata": metadata,
    }


def _cause(cause: Any) -> Any:
    """An older cause object in the snapshot's cause shape."""
    if not isinstance(cause, dict):
        return {"type": "thrown", "originalType": "undefined", "stringRepresentation": "undefined"}
    kind = cause.get("type")
    if kind == "error":
        converted: dict[str, Any] = {
            "type": "error",
            "name": str(cause.get("errorName", "Error")),
            "message": str(cause.get("errorMessage", "")),
        }
        if isinstance(cause.get("errorStack"), str):
            converted["stack"] = cause["errorStack"]
        return converted
    if kind == "value":
        value = cause.get("value")
        return {
            "type": "thrown",
            "originalType": type(value).__name__,
            "value": value,
            "stringRepresentation": json.dumps(value, ensure_ascii=False),
        }
    return {"type": "thrown", "originalType": "undefined", "stringRepresentation": "undefined"}
