"""Where a run records its compensation's progress in the snapshot (see ``saga.py``),
and reading it back; and a step's registered compensation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .waits import WAITS

COMPENSATION = "compensation"


@dataclass(frozen=True)
class Undo:
    """A completed step's compensation: ``fn(value)`` undoes it."""

    name: str
    value: Any
    fn: Callable[[Any], Any]


@dataclass
class Compensation:
    """A run's compensation in progress (or done), as the row records it."""

    pending: list[str]
    done: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"pending": list(self.pending), "done": list(self.done), "errors": list(self.errors)}


def compensation_of(metadata: Mapping[str, Any]) -> Compensation | None:
    """The record in ``metadata``, or None if there is none (or it is not this shape)."""
    section = metadata.get(WAITS)
    record = section.get(COMPENSATION) if isinstance(section, dict) else None
    if not isinstance(record, dict):
        return None
    lists = [record.get(name, []) for name in ("pending", "done", "errors")]
    if not all(isinstance(items, list) for items in lists):
        return None
    pending, done, errors = lists
    if not all(isinstance(k, str) for k in pending + done):
        return None
    return Compensation(pending, done, [e for e in errors if isinstance(e, dict)])


def planned(compensations: Mapping[str, Undo]) -> Compensation:
    """The compensation of every step registered, the last completed first."""
    return Compensation(list(compensations)[::-1])
