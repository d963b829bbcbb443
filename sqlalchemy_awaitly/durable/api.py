"""``run`` and ``run_async``: the entry points, and the checks on their options."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

from ..errors import InvalidInputError
from ..validation import check_key, check_pattern
from ..wire.documents import LOCK_PREFIX, idempotency_key_of
from .cancel import CancelToken
from .clock import SYSTEM_CLOCK, Clock
from .drivers import (
    AsyncBackend,
    AsyncIO,
    SyncBackend,
    SyncIO,
    adrive,
    async_backend,
    drive,
    sync_backend,
)
from .forms import Workflow
from .plan import run_plan
from .results import Result
from .state import DurableEvent, RunOptions, VersionMismatchInfo
from .stopping import StopToken
from .values import check_json

DEFAULT_LEASE_TTL = 60.0

VersionHook = Callable[[VersionMismatchInfo], Any]
EventHook = Callable[[DurableEvent], Any]


def run(
    deps: Any,
    workflow: Workflow,
    *,
    id: str,
    store: object = None,
    version: int = 1,
    metadata: Mapping[str, Any] | None = None,
    on_version_mismatch: VersionHook | None = None,
    allow_concurrent: bool = False,
    lease_ttl: float | timedelta = DEFAULT_LEASE_TTL,
    heartbeat_interval: float | timedelta | None = None,
    idempotency_key: str | None = None,
    input: Any = None,
    retention: float | timedelta | None = None,
    on_event: EventHook | None = None,
    prefix: str | None = None,
    lock_prefix: str = LOCK_PREFIX,
    clock: Clock | None = None,
    cancel: CancelToken | None = None,
    stop: StopToken | None = None,
) -> Result[Any, Any]:
    """Run ``workflow(step, deps)`` durably under ``id``; see docs/durable.md.

    Steps already stored under ``id`` are not run again (their outcome is
    returned); the first failed step ends the run with its ``Err``; success
    deletes the state. Errors of the runner itself come back as ``Err`` values
    (:class:`VersionMismatch`, :class:`ConcurrentExecution`, ...). ``store``
    None means a per-process in-memory store.
    """
    backend = sync_backend(store, prefix)
    options = _options(backend, deps, locals())
    return drive(run_plan(options), SyncIO(backend, workflow))


async def run_async(
    deps: Any,
    workflow: Workflow,
    *,
    id: str,
    store: object = None,
    version: int = 1,
    metadata: Mapping[str, Any] | None = None,
    on_version_mismatch: VersionHook | None = None,
    allow_concurrent: bool = False,
    lease_ttl: float | timedelta = DEFAULT_LEASE_TTL,
    heartbeat_interval: float | timedelta | None = None,
    idempotency_key: str | None = None,
    input: Any = None,
    retention: float | timedelta | None = None,
    on_event: EventHook | None = None,
    prefix: str | None = None,
    lock_prefix: str = LOCK_PREFIX,
    clock: Clock | None = None,
    cancel: CancelToken | None = None,
    stop: StopToken | None = None,
) -> Result[Any, Any]:
    """The asyncio :func:`run`: ``async def workflow(step, deps)`` awaits its steps."""
    backend = async_backend(store, prefix)
    options = _options(backend, deps, locals())
    return await adrive(run_plan(options), AsyncIO(backend, workflow))


_RUN_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(run).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}


def _given(deps: Any, workflow: Workflow, options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(_RUN_DEFAULTS) - {"id"})
    if unknown:
        raise TypeError(f"run() got unexpected options {unknown}")
    return {**_RUN_DEFAULTS, **options, "deps": deps, "workflow": workflow}


def run_registered(
    deps: Any,
    workflow: Workflow,
    registered: dict[str, Any],
    resume_only: bool = False,
    **options: Any,
) -> Result[Any, Any]:
    """:func:`run`, recording ``registered`` (a registry's type, version and input) in
    the row from its first write, before any step (``registry.py``). ``resume_only``:
    a run with no stored state ends with :class:`NothingToResume` instead of starting."""
    given = _given(deps, workflow, options)
    backend = sync_backend(given["store"], given["prefix"])
    run_options = _options(backend, deps, given)
    run_options = replace(run_options, registered=registered, resume_only=resume_only)
    return drive(run_plan(run_options), SyncIO(backend, workflow))


async def run_registered_async(
    deps: Any,
    workflow: Workflow,
    registered: dict[str, Any],
    resume_only: bool = False,
    **options: Any,
) -> Result[Any, Any]:
    given = _given(deps, workflow, options)
    backend = async_backend(given["store"], given["prefix"])
    run_options = _options(backend, deps, given)
    run_options = replace(run_options, registered=registered, resume_only=resume_only)
    return await adrive(run_plan(run_options), AsyncIO(backend, workflow))


def _seconds(value: float | timedelta | None, name: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be seconds or a timedelta, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInputError(f"{name} must be positive and finite, got {value!r}")
    return float(seconds)


def _options(backend: SyncBackend | AsyncBackend, deps: Any, given: dict[str, Any]) -> RunOptions:
    workflow_id = given["id"]
    if not isinstance(workflow_id, str) or not workflow_id:
        raise InvalidInputError(f"id must be a non-empty str, got {workflow_id!r}")
    version = given["version"]
    if isinstance(version, bool) or not isinstance(version, (int, float)):
        raise TypeError(f"version must be a number, got {type(version).__name__}")
    if not math.isfinite(version):
        raise InvalidInputError(f"version must be finite, got {version!r}")
    lease_ttl = _seconds(given["lease_ttl"], "lease_ttl")
    assert lease_ttl is not None
    interval = _seconds(given["heartbeat_interval"], "heartbeat_interval") or lease_ttl / 3
    if interval >= lease_ttl:
        raise InvalidInputError("heartbeat_interval must be shorter than lease_ttl")
    key = given["idempotency_key"]
    if key is not None and (not isinstance(key, str) or not key):
        raise InvalidInputError(f"idempotency_key must be a non-empty str, got {key!r}")
    metadata = dict(given["metadata"] or {})
    check_json(metadata, "metadata")
    check_json(given["input"], "input")
    prefix, lock_prefix = check_pattern(backend.prefix), check_pattern(given["lock_prefix"])
    if prefix.startswith(lock_prefix) or lock_prefix.startswith(prefix):
        raise InvalidInputError(
            f"the state prefix {prefix!r} and the lock prefix {lock_prefix!r} overlap: "
            "leases would be listed and cleared as workflow state"
        )
    check_key(prefix + workflow_id)  # no NUL: PostgreSQL text cannot hold it
    if key is not None:
        check_key(idempotency_key_of(prefix, key))
    return RunOptions(
        workflow_id=workflow_id,
        prefix=prefix,
        lock_prefix=lock_prefix,
        guard_scope=(backend.scope, backend.prefix),
        deps=deps,
        version=version,
        metadata=metadata,
        on_version_mismatch=given["on_version_mismatch"],
        allow_concurrent=bool(given["allow_concurrent"]),
        lease_ttl=lease_ttl,
        heartbeat_interval=interval,
        idempotency_key=key,
        input=given["input"],
        retention=_seconds(given["retention"], "retention"),
        on_event=given["on_event"],
        clock=SYSTEM_CLOCK if given["clock"] is None else given["clock"],
        store=given["store"],
        store_prefix=given["prefix"],
        cancel=_cancel_token(given["cancel"]),
        stop=_stop_token(given["stop"]),
        workflow_name=getattr(given["workflow"], "__name__", None) or "workflow",
    )


def _stop_token(token: object) -> StopToken | None:
    if token is not None and not isinstance(token, StopToken):
        raise TypeError(f"stop must be a durable.StopToken, got {type(token).__name__}")
    return token


def _cancel_token(token: object) -> CancelToken | None:
    if token is not None and not isinstance(token, CancelToken):
        raise TypeError(f"cancel must be a durable.CancelToken, got {type(token).__name__}")
    return token
