"""Parallel groups (``step.all``, ``step.map``, ``step.race``) and where a group in
progress records its finished members.

awaitly 1.35 checkpoints a keyed ``all`` or ``map`` as one step, once every member
has ended (a run that crashes half way runs every member again), and never
checkpoints ``race``. This runner stores the same step, and records each member of
a keyed group as it finishes in the snapshot's metadata (which awaitly carries
through unchanged), as ``{"sqlalchemyAwaitly": {"groups": {group key: {member id:
value}}}}``, so a resumed run runs only the members that had not finished. The
record goes with the checkpoint of the group. A record that is not this shape is
ignored: the group then runs in full, as awaitly's would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from .errors import DurableUsageError
from .waits import WAITS

GROUPS = "groups"


@dataclass(frozen=True)
class Group:
    """A group as the workflow asked for it: members (id, function) in order.

    ``as_list``: the answer is a list in member order, else a dict by member id.
    ``limit``: at most this many members run at a time (None: all at once).
    """

    kind: Literal["all", "map", "race"]
    members: tuple[tuple[str, Callable[[], Any]], ...]
    as_list: bool
    limit: int | None = None

    def answer(self, finished: Mapping[str, Any]) -> list[Any] | dict[str, Any]:
        """Every member's value, in member order."""
        if self.as_list:
            return [finished[member] for member, _ in self.members]
        return {member: finished[member] for member, _ in self.members}


def groups_of(metadata: Mapping[str, Any], stored: Set[str]) -> dict[str, dict[str, Any]]:
    """The finished members recorded in ``metadata``, but for groups stored since."""
    section = metadata.get(WAITS)
    groups = section.get(GROUPS) if isinstance(section, dict) else None
    if not isinstance(groups, dict):
        return {}
    return {
        key: dict(members)
        for key, members in groups.items()
        if key not in stored and isinstance(members, dict)
    }


def members_of(
    members: Mapping[str, Callable[[], Any]] | Sequence[Callable[[], Any]], form: str
) -> tuple[tuple[tuple[str, Callable[[], Any]], ...], bool]:
    """``members`` as (id, function) pairs, and whether the answer is a list: a mapping's
    ids are its keys, a sequence's are the positions ("0", "1", ...)."""
    if isinstance(members, Mapping):
        pairs = tuple(members.items())
        as_list = False
    elif isinstance(members, Sequence) and not isinstance(members, (str, bytes)):
        pairs = tuple((str(i), fn) for i, fn in enumerate(members))
        as_list = True
    else:
        raise DurableUsageError(
            f"{form} takes a dict of functions or a list of them, got {type(members).__name__}"
        )
    for member, fn in pairs:
        if not isinstance(member, str) or not member:
            raise DurableUsageError(f"{form}: a member id must be a non-empty str, got {member!r}")
        if not callable(fn):
            raise DurableUsageError(f"{form}: member {member!r} is not callable: {fn!r}")
    return pairs, as_list


def mapped(
    items: Iterable[Any], fn: Callable[[Any], Any]
) -> tuple[tuple[str, Callable[[], Any]], ...]:
    """``step.map``'s members: ``fn(item)`` for each item, by position."""
    if not callable(fn):
        raise DurableUsageError(f"step.map: fn is not callable: {fn!r}")
    try:
        listed = list(items)
    except TypeError as e:
        raise DurableUsageError(f"step.map: items must be iterable ({e})") from None
    return tuple((str(i), partial(fn, item)) for i, item in enumerate(listed))


def limit_of(concurrency: object) -> int | None:
    """At most how many members run at once (None: all)."""
    if concurrency is None:
        return None
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise DurableUsageError(f"concurrency must be a positive int or None, got {concurrency!r}")
    return concurrency
