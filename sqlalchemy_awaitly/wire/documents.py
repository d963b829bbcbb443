"""Every document a row holds, encoded and decoded in one place (``wire-format.md``).

- **Workflow snapshots** (format 1, and the older ``version``/``entries``
  form, converted on read): :func:`decode_state`, :func:`encode_snapshot`,
  and :func:`workflow_snapshot`, which the runner writes after each step.
- **Idempotency records**, under ``<state prefix>idem:<key>``:
  :func:`idempotency_record` and :func:`read_idempotency`.
- **Lease rows**: :func:`lease_value`.

Field names and order are awaitly 1.35's, so Node.js resumes what Python
wrote and the other way round. A row that cannot be read is
:class:`CorruptStateError` with its key, never treated as absent: an absent
row would make the runner start over and repeat side effects.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..errors import CorruptStateError, InvalidInputError
from . import json_text

Snapshot = dict[str, Any]
SNAPSHOT_FORMAT_VERSION = 1
LOCK_PREFIX = "workflow:lock:"
"""Where a run's lease lives (``<lock prefix><id>``) unless ``run`` is given another."""
IDEMPOTENCY_PREFIX = "idem:"
"""Idempotency records live under ``<state prefix>idem:<key>``, as awaitly writes them."""


def to_json(document: Any) -> str:
    """JSON text as ``JSON.stringify`` writes it (see :mod:`.json_text`)."""
    return json_text.dumps(document)


_stamp: tuple[int, str] = (-1, "")  # the last millisecond formatted, and its text


def now_iso() -> str:
    """UTC, milliseconds, ``Z``: the form awaitly writes ``lastUpdated`` in.

    A run writes several in one millisecond: the text is formatted once per
    millisecond.
    """
    global _stamp
    ms = time.time_ns() // 1_000_000
    last_ms, text = _stamp
    if ms != last_ms:
        moment = datetime.fromtimestamp(ms / 1000, timezone.utc)
        text = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        _stamp = (ms, text)
    return text


# --- snapshots: reading ---------------------------------------------------------


def decode_state(key: str, text: object) -> Snapshot:
    """Parse a stored row into a format-1 snapshot; the older format is converted.

    Anything that is not a document awaitly or this package wrote (not text,
    not JSON, ``NaN`` or ``Infinity``, nesting deeper than anyone writes,
    fields of the wrong type) is :class:`CorruptStateError` for this row alone.
    """
    if not isinstance(text, str):
        raise CorruptStateError(key, f"the stored value is {type(text).__name__}, not text")
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


def version_of(snapshot: Snapshot) -> int | float:
    """The workflow version a snapshot was written by; not a number reads as 1, as in awaitly."""
    version = snapshot.get("metadata", {}).get("version")
    if isinstance(version, (int, float)) and not isinstance(version, bool):
        return version
    return 1


def _brief(value: object) -> str:
    """A stored value named in an error: a scalar's repr, cut short; a list or an
    object by its kind (one nested past the recursion limit has no repr)."""
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "an object"
    try:
        shown = repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits()
        return "a number"
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _snapshot_problem(document: Mapping[str, Any]) -> str | None:
    version = document.get("formatVersion")
    if version != SNAPSHOT_FORMAT_VERSION or isinstance(version, bool):
        return f"formatVersion {_brief(version)} is not one this version reads (1)"
    if not isinstance(document.get("steps"), dict):
        return "'steps' is not an object"
    for step_key, outcome in document["steps"].items():
        if not isinstance(outcome, dict) or not isinstance(outcome.get("ok"), bool):
            return f"step {_brief(step_key)} has no boolean 'ok'"
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
            raise CorruptStateError(
                key, f"entry {_brief(step_key)} has no result with a boolean 'ok'"
            )
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
            "stringRepresentation": to_json(value),
        }
    return {"type": "thrown", "originalType": "undefined", "stringRepresentation": "undefined"}


# --- snapshots: writing ---------------------------------------------------------


def encode_snapshot(snapshot: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> str:
    """JSON text of a format-1 snapshot, with ``metadata`` merged into its own."""
    document = dict(snapshot)
    problem = _snapshot_problem(document)
    if problem:
        raise InvalidInputError(f"not a workflow snapshot: {problem}")
    if metadata is not None:
        document["metadata"] = {**document.get("metadata", {}), **metadata}
    try:
        return to_json(document)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"workflow snapshot is not JSON-serialisable: {e}") from e


STEP_MS = "sqlalchemyAwaitlyStepMs"
"""Metadata key of the milliseconds each stored step took, in step order (null: not
known, as for a step awaitly ran); written by this runner, read by ``show``."""


_OK_VALUE = ("ok", "value")  # a step's outcome that returned a value, as runners build it


class EncodedSteps:
    """The ``steps`` object of a snapshot, each outcome encoded once, and how long each
    step took (:data:`STEP_MS`).

    Every checkpoint rewrites the whole snapshot (that is the format Node.js
    reads), but the outcomes already recorded need not be serialised again:
    a 1,000-step run otherwise spends a third of its time re-encoding them.
    """

    def __init__(self) -> None:
        self._parts: dict[str, str] = {}
        self._keys: dict[str, str] = {}
        self._ms: dict[str, str] = {}
        self._timed = False
        # The STEP_MS list's items as text, appended to as steps are added (a join of
        # the whole list at every checkpoint cost a 100-step run 5% more); None once
        # a step is dropped or replaced, until the next join.
        self._ms_text: str | None = ""

    def put(self, key: str, outcome: Any, ms: object = None) -> None:
        value = outcome.get("value") if outcome.get("ok") is True else None
        if type(value) is int and tuple(outcome) == _OK_VALUE:  # the commonest, as encoded
            self._parts[key] = f'{self.key_json(key)}:{{"ok":true,"value":{value}}}'
        else:
            self._parts[key] = f"{self.key_json(key)}:{to_json(outcome)}"
        if type(ms) is int and ms >= 0:
            shown = str(ms)
            self._timed = True
        else:
            shown = "null"
        if key in self._ms:
            self._ms_text = None
        elif self._ms_text is not None:
            self._ms_text = f"{self._ms_text},{shown}" if self._ms_text else shown
        self._ms[key] = shown

    def drop(self, key: str) -> None:
        self._parts.pop(key, None)
        if self._ms.pop(key, None) is not None:
            self._ms_text = None

    def key_json(self, key: str) -> str:
        """``key`` as JSON text (a step key is written twice per checkpoint)."""
        text = self._keys.get(key)
        if text is None:
            plain = key.isascii() and key.isprintable() and '"' not in key and "\\" not in key
            text = self._keys[key] = f'"{key}"' if plain else to_json(key)
        return text

    def json(self) -> str:
        return "{" + ",".join(self._parts.values()) + "}"

    def durations_json(self) -> str | None:
        """The :data:`STEP_MS` list, or None while no step has a duration."""
        if not self._timed:
            return None
        if self._ms_text is None:
            self._ms_text = ",".join(self._ms.values())
        return f"[{self._ms_text}]"


_SNAPSHOT_HEAD = '{"formatVersion":1,"workflowName":'


class SnapshotWriter:
    """The snapshot texts of one run: the parts that stay the same from one checkpoint
    to the next (the head, the steps recorded, the metadata) are encoded once."""

    def __init__(self, workflow_id: str, steps: EncodedSteps) -> None:
        self.steps = steps
        self._head = f'{_SNAPSHOT_HEAD}{to_json(workflow_id)},"steps":'
        self._metadata: tuple[dict[str, Any], str] | None = None  # a dict and its JSON

    def _metadata_json(self, metadata: dict[str, Any]) -> str:
        """``metadata``'s JSON; the same dict object as last time is not encoded again
        (the caller hands a new dict whenever the metadata changes)."""
        known = self._metadata
        if known is not None and known[0] is metadata:
            return known[1]
        text = to_json(metadata)
        self._metadata = (metadata, text)
        return text

    def _described(self, metadata: dict[str, Any], key: str | None) -> str:
        """The metadata with the step durations and ``lastStepKey`` (the key's JSON)
        spliced in after it, so that the rest is not encoded again."""
        if STEP_MS in metadata or "lastStepKey" in metadata:
            metadata = {k: v for k, v in metadata.items() if k not in (STEP_MS, "lastStepKey")}
        text = self._metadata_json(metadata)
        durations = self.steps.durations_json()
        if durations is not None:
            tail = f'"{STEP_MS}":{durations}'
            if key is not None:
                tail = f'{tail},"lastStepKey":{key}'
        elif key is not None:
            tail = f'"lastStepKey":{key}'
        else:
            return text
        return f"{text[:-1]},{tail}}}" if len(text) > 2 else f"{{{tail}}}"

    def text(self, last_step_key: str | None, metadata: dict[str, Any]) -> str:
        """The whole state after a step: every outcome so far, and the step just recorded
        (None: a run's first write, before any step).

        The same text as ``to_json`` of the document, built from encoded parts.
        """
        if last_step_key is None:
            return (
                f"{self._head}{self.steps.json()},"
                f'"execution":{{"status":"running","lastUpdated":"{now_iso()}"}},'
                f'"metadata":{self._described(metadata, None)}}}'
            )
        key = self.steps.key_json(last_step_key)
        return (
            f"{self._head}{self.steps.json()},"
            f'"execution":{{"status":"running","lastUpdated":"{now_iso()}","currentStepId":{key}}},'
            f'"metadata":{self._described(metadata, key)}}}'
        )


def workflow_snapshot(
    workflow_id: str,
    steps: EncodedSteps,
    last_step_key: str,
    metadata: dict[str, Any],
) -> str:
    """The snapshot after a step, written once (:class:`SnapshotWriter` for a whole run)."""
    return SnapshotWriter(workflow_id, steps).text(last_step_key, metadata)


# --- idempotency records and leases ----------------------------------------------


def idempotency_key_of(state_prefix: str, idempotency_key: str) -> str:
    return f"{state_prefix}{IDEMPOTENCY_PREFIX}{idempotency_key}"


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


@dataclass(frozen=True)
class IdempotencyRecord:
    """What an idempotency row says: whose it is, its input, and the result if it ended."""

    workflow_id: object
    input: Any
    completed: bool
    final: Mapping[str, Any] | None


def read_idempotency(key: str, text: object) -> IdempotencyRecord:
    """An idempotency row, read as strictly as a snapshot (:class:`CorruptStateError`)."""
    document = decode_state(key, text)
    metadata = document.get("metadata", {})
    final = metadata.get("finalResult")
    return IdempotencyRecord(
        metadata.get("workflowId"),
        metadata.get("input"),
        document["execution"].get("status") == "completed",
        final if isinstance(final, dict) else None,
    )


def lease_value(owner_token: str, owner: str | None = None) -> str:
    """A lease row's value: awaitly's ``{"ownerToken": ...}`` (what a Node.js store
    sharing leases writes and reads), and ``owner``, who holds it, for operators."""
    value = {"ownerToken": owner_token}
    if owner is not None:
        value["owner"] = owner
    return to_json(value)


def lease_holder(text: str) -> str | None:
    """Who holds a lease, as its row says: its ``owner``, else its token's start (a
    Node.js lease); None if the row is not a lease."""
    try:
        lease = json_text.loads(text)
    except ValueError:
        return None
    if not isinstance(lease, dict) or not isinstance(lease.get("ownerToken"), str):
        return None
    owner = lease.get("owner")
    return owner if isinstance(owner, str) else f"token {lease['ownerToken'][:8]}"


def same_input(stored: Any, given: Any) -> bool:
    """Inputs compare as JavaScript sees them: key order, and ``1`` against ``1.0``, are no
    difference (Node.js writes an integral float as an integer)."""
    return json_text.same(stored, given)
