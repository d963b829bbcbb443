"""Saving a run's snapshot outside a step's checkpoint (a compensation's progress, a
cancellation), under the lease."""

from __future__ import annotations

from typing import Any

from . import tracing
from .cancel import saved_under_lease
from .requests import Plan, Save
from .results import Err, LeaseExpired, PersistenceFailed, Result
from .state import RunState


def save_snapshot(state: RunState, what: str) -> Plan[Result[Any, Any] | None]:
    """Save the snapshot as it is now (``what`` changed: a compensation's progress, a
    cancellation), under the lease; the run's result instead if it cannot be saved."""
    o = state.options
    text = state.snapshot_text(state.last_key)
    seq = state.next_seq()
    try:
        save = Save(o.state_key, text, None, None, state.guard, seq)
        saved = yield from saved_under_lease(state, save)
    except Exception as e:
        tracing.checkpoint(state, "failed")
        return Err(PersistenceFailed(o.workflow_id, "save", e, what))
    tracing.checkpoint(state, "saved" if saved is not False else "lease_lost")
    if saved is False:
        assert state.lease is not None
        state.lease.lost = True
        return Err(LeaseExpired(o.workflow_id))
    if seq > state.saved_seq:
        state.saved_text, state.saved_seq = text, seq
    state.has_row = True
    return None
