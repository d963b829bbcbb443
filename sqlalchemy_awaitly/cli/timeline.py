"""``show ID``: a stored run as a step timeline an operator can read.

One line per stored step, in the order they ran: its outcome, how long it took
(where this runner recorded it), and, for a failure, the error's type and
message (never a traceback: ``show --raw`` prints the stored JSON as it is).
Rows awaitly wrote read the same way.
"""

from __future__ import annotations

from typing import Any

from ..durable import PendingRun
from ..durable.values import text_of
from ..wire import json_text
from ..wire.documents import STEP_MS

MESSAGE_WIDTH = 120


def error_of(outcome: dict[str, Any]) -> tuple[str, str]:
    """A failed step's error type and one-line message, from awaitly's shapes: a
    string code, or an object with ``type`` / ``_tag`` / ``name`` and ``message``;
    without a message, what was thrown (the stored ``cause``: name and message)."""
    error = outcome.get("error")
    if isinstance(error, str):
        return error, ""
    if not isinstance(error, dict):
        return type(error).__name__ if error is not None else "undefined", ""
    kind = next(
        (error[k] for k in ("type", "_tag", "name") if isinstance(error.get(k), str)), "object"
    )
    message = error.get("message")
    if isinstance(message, str):
        return kind, _line(message)
    return kind, _thrown(outcome.get("cause"))


def _thrown(cause: object) -> str:
    """What a stored cause says was thrown: ``Name: message``, or its text."""
    if not isinstance(cause, dict):
        return ""
    name, message = cause.get("name"), cause.get("message")
    if isinstance(message, str):
        return _line(f"{name}: {message}" if isinstance(name, str) else message)
    text = cause.get("stringRepresentation")
    return _line(text) if isinstance(text, str) else ""


def _line(text: str) -> str:
    flat = " ".join(text_of(text).split())
    return flat if len(flat) <= MESSAGE_WIDTH else flat[: MESSAGE_WIDTH - 3] + "..."


def timeline(workflow_id: str, snapshot: dict[str, Any], run: PendingRun | None) -> list[str]:
    """The lines ``show`` prints for ``snapshot``; ``run`` is its listing (state, holder)."""
    state = str(run.state) if run is not None else "completed"
    execution = snapshot.get("execution") or {}
    metadata = snapshot.get("metadata") or {}
    section = metadata.get("sqlalchemyAwaitly")
    section = section if isinstance(section, dict) else {}
    lines = [f"{text_of(workflow_id)}  {state}"]
    workflow = section.get("workflow")
    if isinstance(workflow, dict):
        kind, version = workflow.get("type"), workflow.get("version")
        lines.append(f"  workflow     {_scalar(kind)} v{_scalar(version)}")
    if run is not None and run.holder is not None:
        lines.append(f"  held by      {text_of(run.holder)}")
    cancelled = section.get("cancelled")
    if isinstance(cancelled, dict):
        reason = cancelled.get("reason")
        lines.append(
            f"  cancelled    {_line(reason) if isinstance(reason, str) else '(no reason)'}"
        )
    updated = execution.get("lastUpdated")
    lines.append(f"  last update  {_scalar(updated) if updated else '-'}")
    steps = snapshot.get("steps") or {}
    if not steps:
        lines.append("  no stored steps")
        return lines
    width = max(len(text_of(key)) for key in steps)
    took = durations(metadata, len(steps))
    for n, (key, outcome) in enumerate(steps.items(), 1):
        shown = text_of(key).ljust(width)
        time = took[n - 1]
        if outcome.get("ok"):
            lines.append(f"  {n:>3}  {shown}  ok{'      ' + time if time else ''}")
            continue
        kind, message = error_of(outcome)
        lines.append(
            f"  {n:>3}  {shown}  failed  {time + '  ' if time else ''}"
            f"{text_of(kind)}{': ' + message if message else ''}"
        )
    return lines


def _scalar(value: object) -> str:
    """A stored field that should be a string or a number, as text; anything else
    another writer left (a list, an object: possibly nested past what ``str``
    can recurse into) by its JSON kind."""
    if isinstance(value, str):
        return text_of(value)
    if isinstance(value, (list, dict)):
        return "(list)" if isinstance(value, list) else "(object)"
    if type(value) is int and abs(value) >= 10**18:
        return "(number)"
    return json_text.dumps(value)  # a number, true, false or null, as JSON writes it


def durations(metadata: dict[str, Any], count: int) -> list[str]:
    """How long each of ``count`` stored steps took, as this runner records it (an
    empty string where it is not known: a step awaitly ran, a row of an older
    version, or a list out of step with the steps)."""
    recorded = metadata.get(STEP_MS)
    if not isinstance(recorded, list) or len(recorded) != count:
        return [""] * count
    return [_duration(ms) for ms in recorded]


def _duration(ms: object) -> str:
    if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
        return ""
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 60_000} min {ms % 60_000 // 1000} s"
