"""Writes whose reply may be lost, and how a plan finds out what happened."""

from __future__ import annotations

import logging
from typing import Any

from ..errors import OutcomeUnknownError
from .requests import Acquire, Delete, Finish, Load, Plan, Release

log = logging.getLogger("sqlalchemy_awaitly.durable")


# --- lost replies -------------------------------------------------------------
# The store raises OutcomeUnknownError where a repeat would answer wrongly;
# these writes carry a unique value (a lease token, a claim marker, the
# snapshot text), so reading it back tells what happened. See docs/errors.md.


def acquire(key: str, value: str, ttl: float | None) -> Plan[bool]:
    """Insert ``key`` = ``value`` unless a live row holds it; True if this call did."""
    try:
        return bool((yield Acquire(key, value, ttl)))
    except OutcomeUnknownError:
        current = yield Load(key)
        if current is not None:
            return bool(current == value)
        return bool((yield Acquire(key, value, ttl)))  # not there: the insert did not commit


def delete_guarded(
    key: str, guard: tuple[str, str], saved_text: str | None, release: bool = False
) -> Plan[bool]:
    """Delete the run's row while its lease holds; True if it is gone.

    With ``release``, the lease row goes in the same statement: True if the
    lease held (the row, if there was one, went with it).
    """
    try:
        return bool((yield Delete(key, guard, release)))
    except OutcomeUnknownError:
        if release and (yield Load(guard[0])) == guard[1]:
            return bool((yield Delete(key, guard, release)))  # still ours: not committed
        current = yield Load(key)
        if current is None:
            return True
        if current != saved_text:
            return False  # another owner wrote it: the lease had changed hands
        if release:
            return False  # the row is there and the lease is not ours: it was lost
        return bool((yield Delete(key, guard)))


def repeated_if_unknown(request: Delete | Release) -> Plan[None]:
    """A write whose answer the runner ignores and whose effect a repeat only confirms
    (a delete without a lease; a release, which removes the lease only while it is
    ours): a lost reply is a reason to send it once more."""
    try:
        yield request
    except OutcomeUnknownError:
        yield request


def commit(tx: Any, key: str, text: str) -> Plan[None]:
    """Commit a transactional step; if the reply to COMMIT is lost, its checkpoint says."""
    try:
        yield Finish(tx, True)
    except Exception:
        if (yield Load(key)) != text:
            raise  # rolled back: the step's writes went with it, it runs again next time
        log.warning("the reply to a step's COMMIT was lost; its checkpoint shows it committed")
