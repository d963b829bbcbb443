"""Looking after stored runs: has_state, delete_state(s), list_pending, clear_state, retry_step.

Each helper is one plan (as the runner's are) with a sync and an asyncio
entry point; they act only on keys under the store's state prefix.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace

from ..errors import CorruptStateError, InvalidInputError
from ..validation import check_pattern
from ..wire.documents import (
    LOCK_PREFIX,
    STEP_MS,
    decode_state,
    idempotency_key_of,
    lease_holder,
    lease_value,
    now_iso,
    to_json,
)
from .cancel import CANCELLED, cancelled_mark, marked
from .drivers import AsyncIO, SyncIO, adrive, async_backend, drive, sync_backend
from .replies import acquire, repeated_if_unknown
from .requests import Delete, DeleteMany, Keys, Load, LoadMany, Plan, Release, Save
from .run_states import RunState, state_of
from .state import this_process
from .waits import WAITS

_BATCH = 1000


@dataclass(frozen=True)
class PendingRun:
    """A stored run that has not completed: running, failed, crashed or corrupt
    (:mod:`~sqlalchemy_awaitly.durable.run_states` says how each is told)."""

    id: str
    state: RunState
    steps: int
    last_updated: str | None
    failed_step: str | None = None
    corrupt: str | None = None  # why the row cannot be read, if it cannot
    holder: str | None = None  # a running run's lease holder, as its lease row says

    def as_json(self) -> dict[str, object]:
        """The fields as JSON values, for scripts (the CLI's ``list --json``)."""
        return {**asdict(self), "state": self.state.value}


@dataclass(frozen=True)
class DeleteReport:
    deleted: int
    failed: dict[str, BaseException] = field(default_factory=dict)


def _check_id(workflow_id: object) -> str:
    if not isinstance(workflow_id, str) or not workflow_id:
        raise InvalidInputError(f"a workflow id must be a non-empty str, got {workflow_id!r}")
    return workflow_id


def _has_state(prefix: str, workflow_id: str) -> Plan[bool]:
    return (yield Load(prefix + _check_id(workflow_id))) is not None


def _delete_state(prefix: str, workflow_id: str) -> Plan[bool]:
    return bool((yield Delete(prefix + _check_id(workflow_id))))


def _delete_states(prefix: str, workflow_ids: Iterable[str]) -> Plan[DeleteReport]:
    ids = [_check_id(i) for i in dict.fromkeys(workflow_ids)]
    if not ids:
        return DeleteReport(0)
    try:
        return DeleteReport(int((yield DeleteMany([prefix + i for i in ids]))))
    except Exception:
        pass  # one by one, to say which
    deleted, failed = 0, dict[str, BaseException]()
    for i in ids:
        try:
            deleted += bool((yield Delete(prefix + i)))
        except Exception as e:
            failed[i] = e
    return DeleteReport(deleted, failed)


def _list_pending(
    state_prefix: str, lock_prefix: str, prefix: str, limit: int | None
) -> Plan[list[PendingRun]]:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidInputError(f"limit must be a non-negative int, got {limit!r}")
    keys = yield Keys(state_prefix + prefix)
    keys = [k for k in keys if not k.startswith(idempotency_key_of(state_prefix, ""))]
    rows: dict[str, str] = {}
    for start in range(0, len(keys), _BATCH):
        rows.update((yield LoadMany(keys[start : start + _BATCH])))
    # Read after the state rows: a run that ends in between shows as crashed, never the
    # other way round (a lease read first could vanish with its run, the row remain).
    lock_keys = yield Keys(lock_prefix + prefix)
    leases: dict[str, str] = {}
    for start in range(0, len(lock_keys), _BATCH):
        leases.update((yield LoadMany(lock_keys[start : start + _BATCH])))
    holders = {key[len(lock_prefix) :]: lease_holder(text) for key, text in leases.items()}
    runs = []
    for key, text in rows.items():
        workflow_id = key[len(state_prefix) :]
        run = _pending(workflow_id, key, text, workflow_id in holders)
        runs.append(replace(run, holder=holders.get(workflow_id)))
    runs.sort(key=lambda r: r.last_updated or "", reverse=True)
    return runs if limit is None else runs[:limit]


def _pending(workflow_id: str, key: str, text: str, leased: bool) -> PendingRun:
    try:
        snapshot = decode_state(key, text)
    except CorruptStateError as e:
        state = state_of(leased=leased, corrupt=True, failed=False)
        return PendingRun(workflow_id, state, 0, None, corrupt=e.reason)
    steps = snapshot["steps"]
    failed = next((k for k, outcome in steps.items() if not outcome["ok"]), None)
    updated = snapshot["execution"].get("lastUpdated")
    cancelled = cancelled_mark(snapshot.get("metadata") or {}) is not None
    return PendingRun(
        workflow_id,
        state_of(leased=leased, corrupt=False, failed=failed is not None, cancelled=cancelled),
        len(steps),
        updated if isinstance(updated, str) else None,
        failed,
    )


def _clear_state(prefix: str) -> Plan[int]:
    keys = yield Keys(prefix)
    deleted = 0
    for start in range(0, len(keys), _BATCH):
        deleted += int((yield DeleteMany(keys[start : start + _BATCH])))
    return deleted


def _rewritten(snapshot: dict[str, object]) -> str:
    """A snapshot a helper changed, as its text, stamped as updated now."""
    execution = snapshot.get("execution")
    stamped = {**(execution if isinstance(execution, dict) else {}), "lastUpdated": now_iso()}
    return to_json({**snapshot, "execution": stamped})


def _retry_step(prefix: str, workflow_id: str, step_key: str | None) -> Plan[list[str]]:
    key = prefix + _check_id(workflow_id)
    text = yield Load(key)
    if text is None:
        return []
    snapshot = decode_state(key, text)
    steps = snapshot["steps"]
    cleared = [k for k, o in steps.items() if not o["ok"] and step_key in (None, k)]
    if not cleared:
        return []
    snapshot["steps"] = {k: o for k, o in steps.items() if k not in cleared}
    metadata = snapshot.get("metadata")
    took = metadata.get(STEP_MS) if isinstance(metadata, dict) else None
    if isinstance(metadata, dict) and isinstance(took, list) and len(took) == len(steps):
        kept = [ms for k, ms in zip(steps, took, strict=True) if k not in cleared]
        snapshot["metadata"] = {**metadata, STEP_MS: kept}  # still one per step
    yield Save(key, _rewritten(snapshot))
    return cleared


CANCEL_LEASE_TTL = 60.0  # a running owner's lease, once marked: its renewals extend it


def _cancel(prefix: str, lock_prefix: str, workflow_id: str, reason: str | None) -> Plan[bool]:
    """Ask a running run to stop (mark its lease), or mark a stopped one cancelled."""
    if reason is not None and not isinstance(reason, str):
        raise TypeError(f"a cancellation reason is a str or None, got {type(reason).__name__}")
    lock_key = lock_prefix + _check_id(workflow_id)
    for _ in range(3):  # the lease changed hands meanwhile: look again
        current = yield Load(lock_key)
        if current is not None:
            mark = marked(current, reason)
            if mark is None:
                raise InvalidInputError(f"the lease row of {workflow_id!r} is not a lease")
            if mark == current:
                return True  # asked already
            asked = yield Save(lock_key, mark, CANCEL_LEASE_TTL, None, (lock_key, current))
            if asked:
                return True
            continue
        mine = lease_value(uuid.uuid4().hex, this_process())
        if not (yield from acquire(lock_key, mine, CANCEL_LEASE_TTL)):
            continue  # it started meanwhile
        try:
            return bool(
                (yield from _mark_cancelled(prefix + workflow_id, reason, (lock_key, mine)))
            )
        finally:
            yield from repeated_if_unknown(Release(lock_key, mine))
    return False


def _mark_cancelled(key: str, reason: str | None, guard: tuple[str, str]) -> Plan[object]:
    """Record the cancellation in the row of a run that is not running."""
    text = yield Load(key)
    if text is None:
        return False
    snapshot = decode_state(key, text)
    metadata = dict(snapshot.get("metadata") or {})
    section = metadata.get(WAITS)
    last = metadata.get("lastStepKey")
    mark = {"reason": reason, "lastStepKey": last if isinstance(last, str) else None}
    metadata[WAITS] = {
        **(section if isinstance(section, dict) else {}),
        CANCELLED: {**mark, "at": now_iso()},
    }
    snapshot["metadata"] = metadata
    return (yield Save(key, _rewritten(snapshot), None, None, guard))


def _uncancel(prefix: str, workflow_id: str) -> Plan[bool]:
    key = prefix + _check_id(workflow_id)
    text = yield Load(key)
    if text is None:
        return False
    snapshot = decode_state(key, text)
    metadata = dict(snapshot.get("metadata") or {})
    section = metadata.get(WAITS)
    if not isinstance(section, dict) or CANCELLED not in section:
        return False
    rest = {k: v for k, v in section.items() if k != CANCELLED}
    if rest:
        metadata[WAITS] = rest
    else:
        del metadata[WAITS]
    snapshot["metadata"] = metadata
    yield Save(key, _rewritten(snapshot))
    return True


# --- the entry points -------------------------------------------------------


def _sync(store: object, prefix: str | None) -> tuple[str, SyncIO]:
    backend = sync_backend(store, prefix)
    return backend.prefix, SyncIO(backend)


def _async(store: object, prefix: str | None) -> tuple[str, AsyncIO]:
    backend = async_backend(store, prefix)
    return backend.prefix, AsyncIO(backend)


def has_state(store: object, workflow_id: str, *, state_prefix: str | None = None) -> bool:
    """Whether ``workflow_id`` has stored state (a run in progress, crashed or failed)."""
    p, io = _sync(store, state_prefix)
    return drive(_has_state(p, workflow_id), io)


def delete_state(store: object, workflow_id: str, *, state_prefix: str | None = None) -> bool:
    """Forget a run: the next ``run`` with this id starts over. True if there was one."""
    p, io = _sync(store, state_prefix)
    return drive(_delete_state(p, workflow_id), io)


def delete_states(
    store: object, workflow_ids: Iterable[str], *, state_prefix: str | None = None
) -> DeleteReport:
    """Forget many runs (one statement); the report says how many went and which failed."""
    p, io = _sync(store, state_prefix)
    return drive(_delete_states(p, workflow_ids), io)


def list_pending(
    store: object,
    *,
    prefix: str = "",
    limit: int | None = None,
    state_prefix: str | None = None,
    lock_prefix: str = LOCK_PREFIX,
) -> list[PendingRun]:
    """Stored runs whose id starts with ``prefix``, newest ``lastUpdated`` first, each with
    its :class:`RunState`; ``lock_prefix`` is the one the runs were started with."""
    p, io = _sync(store, state_prefix)
    return drive(_list_pending(p, check_pattern(lock_prefix), prefix, limit), io)


def clear_state(store: object, *, state_prefix: str | None = None) -> int:
    """Delete every row under this store's state prefix (never the rest of the table)."""
    p, io = _sync(store, state_prefix)
    return drive(_clear_state(p), io)


def retry_step(
    store: object,
    workflow_id: str,
    step_key: str | None = None,
    *,
    state_prefix: str | None = None,
) -> list[str]:
    """Clear the stored failure of ``step_key`` (or every failed step), so the next run
    executes it again; returns the keys cleared. Not for a run that is running."""
    p, io = _sync(store, state_prefix)
    return drive(_retry_step(p, workflow_id, step_key), io)


def cancel(
    store: object,
    workflow_id: str,
    reason: str | None = None,
    *,
    state_prefix: str | None = None,
    lock_prefix: str = LOCK_PREFIX,
) -> bool:
    """Cancel a run from anywhere: a running one stops before its next step (asked
    through its lease row, seen at its next checkpoint or lease renewal), a stopped one
    is marked cancelled at once. False if there is no such run."""
    p, io = _sync(store, state_prefix)
    return drive(_cancel(p, check_pattern(lock_prefix), workflow_id, reason), io)


def uncancel(store: object, workflow_id: str, *, state_prefix: str | None = None) -> bool:
    """Clear the cancellation recorded in a run's row, so the next run resumes it;
    False if it is not marked cancelled. Not for a run that is running."""
    p, io = _sync(store, state_prefix)
    return drive(_uncancel(p, workflow_id), io)


async def has_state_async(
    store: object, workflow_id: str, *, state_prefix: str | None = None
) -> bool:
    p, io = _async(store, state_prefix)
    return await adrive(_has_state(p, workflow_id), io)


async def delete_state_async(
    store: object, workflow_id: str, *, state_prefix: str | None = None
) -> bool:
    p, io = _async(store, state_prefix)
    return await adrive(_delete_state(p, workflow_id), io)


async def delete_states_async(
    store: object, workflow_ids: Iterable[str], *, state_prefix: str | None = None
) -> DeleteReport:
    p, io = _async(store, state_prefix)
    return await adrive(_delete_states(p, workflow_ids), io)


async def list_pending_async(
    store: object,
    *,
    prefix: str = "",
    limit: int | None = None,
    state_prefix: str | None = None,
    lock_prefix: str = LOCK_PREFIX,
) -> list[PendingRun]:
    p, io = _async(store, state_prefix)
    return await adrive(_list_pending(p, check_pattern(lock_prefix), prefix, limit), io)


async def clear_state_async(store: object, *, state_prefix: str | None = None) -> int:
    p, io = _async(store, state_prefix)
    return await adrive(_clear_state(p), io)


async def retry_step_async(
    store: object,
    workflow_id: str,
    step_key: str | None = None,
    *,
    state_prefix: str | None = None,
) -> list[str]:
    p, io = _async(store, state_prefix)
    return await adrive(_retry_step(p, workflow_id, step_key), io)


async def cancel_async(
    store: object,
    workflow_id: str,
    reason: str | None = None,
    *,
    state_prefix: str | None = None,
    lock_prefix: str = LOCK_PREFIX,
) -> bool:
    p, io = _async(store, state_prefix)
    return await adrive(_cancel(p, check_pattern(lock_prefix), workflow_id, reason), io)


async def uncancel_async(
    store: object, workflow_id: str, *, state_prefix: str | None = None
) -> bool:
    p, io = _async(store, state_prefix)
    return await adrive(_uncancel(p, workflow_id), io)


__all__ = [
    "DeleteReport",
    "PendingRun",
    "RunState",
    "cancel",
    "cancel_async",
    "clear_state",
    "clear_state_async",
    "delete_state",
    "delete_state_async",
    "delete_states",
    "delete_states_async",
    "has_state",
    "has_state_async",
    "list_pending",
    "list_pending_async",
    "retry_step",
    "retry_step_async",
    "uncancel",
    "uncancel_async",
]
