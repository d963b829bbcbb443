"""Performing the plans' I/O: blocking calls for ``run``, awaits for ``run_async``.

The two drivers differ only in how they call: which store method serves a
request is decided once, in :func:`store_call`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import inspect
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from ..aio import AsyncSQLAlchemyKeyValueStore
from ..errors import ConfigurationError
from ..persistence import DEFAULT_PREFIX, AsyncStatePersistence, StatePersistence
from ..store import SQLAlchemyKeyValueStore
from .errors import DurableUsageError
from .heartbeat import AsyncHeartbeat, Pending, heartbeats
from .memory import MemoryStore, default_store
from .plan import (
    Acquire,
    Begin,
    BodyOutcome,
    Call,
    Delete,
    DeleteMany,
    Finish,
    Flush,
    Keys,
    Load,
    LoadMany,
    Plan,
    Release,
    Renew,
    Request,
    RunBody,
    RunState,
    Save,
    StartHeartbeat,
    StepExit,
    StopHeartbeat,
    Touch,
    step_plan,
)

T = TypeVar("T")
Workflow = Callable[..., Any]


@dataclass(frozen=True)
class Backend:
    """Where a run keeps its rows: the key/value store, the prefix, the engine if any."""

    kv: Any
    prefix: str
    engine: Any
    scope: object


def backend_for(store: object, prefix: str | None, *, asyncio: bool) -> Backend:
    if store is None:
        store = default_store
    kv: Any = store
    own_prefix = DEFAULT_PREFIX
    if isinstance(store, (StatePersistence, AsyncStatePersistence)):
        kv, own_prefix = store.store, store.prefix
    if not isinstance(kv, (SQLAlchemyKeyValueStore, AsyncSQLAlchemyKeyValueStore, MemoryStore)):
        raise TypeError(
            "store must be a StatePersistence, a key/value store or a MemoryStore, "
            f"got {type(store).__name__}"
        )
    if isinstance(kv, AsyncSQLAlchemyKeyValueStore) and not asyncio:
        raise ConfigurationError("an asyncio store needs durable.run_async")
    if isinstance(kv, SQLAlchemyKeyValueStore) and asyncio:
        raise ConfigurationError(
            "a sync store would block the event loop: give durable.run_async an asyncio store"
        )
    engine = getattr(kv, "engine", None)
    scope: object = (
        id(kv) if engine is None else (str(engine.url), kv.table.key)  # type: ignore[union-attr]
    )
    return Backend(kv, prefix or own_prefix, engine, scope)


def store_call(kv: Any, request: Request) -> Any:
    """The store method that serves ``request`` (its result is awaitable on an asyncio store)."""
    if isinstance(request, Load):
        return kv.get(request.key)
    if isinstance(request, Save):
        where = {} if request.tx is None else {"connection": request.tx.connection}
        if request.guard is None:
            return kv.set(request.key, request.text, request.ttl, **where)
        guard_key, guard_value = request.guard
        return kv.set_guarded(
            request.key,
            request.text,
            request.ttl,
            guard_key=guard_key,
            guard_value=guard_value,
            **where,
        )
    if isinstance(request, Delete):
        if request.guard is None:
            return kv.delete(request.key)
        guard_key, guard_value = request.guard
        return kv.delete_guarded(
            request.key, guard_key=guard_key, guard_value=guard_value, release=request.release
        )
    if isinstance(request, Touch):
        return kv.touch(request.key, request.ttl)
    if isinstance(request, Acquire):
        return kv.add(request.key, request.value, request.ttl)
    if isinstance(request, Renew):
        return kv.touch(request.key, request.ttl, if_value=request.value)
    if isinstance(request, Release):
        return kv.delete(request.key, if_value=request.value)
    if isinstance(request, Keys):
        return kv.keys_with_prefix(request.prefix)
    if isinstance(request, LoadMany):
        return kv.get_many(request.keys)
    if isinstance(request, DeleteMany):
        return kv.delete_many(request.keys)
    raise TypeError(f"not a store request: {request!r}")


def in_autocommit(conn: Connection) -> bool:
    """True if a transaction begun on ``conn`` would not be one: each statement would
    commit alone, so a raising step's writes would stay. SQLAlchemy's own test (the
    isolation level of the connection, else of the engine), since the database's
    reported level does not show AUTOCOMMIT."""
    return conn._is_autocommit_isolation()


def _no_engine() -> DurableUsageError:
    return DurableUsageError(
        "a transactional step needs a SQLAlchemy store (the in-memory store has no database)"
    )


def _ended_inside_group(state: RunState, error: BaseException) -> bool:
    """A step ended the run, and a task group wrapped its exit in an exception group."""
    group = getattr(builtins, "BaseExceptionGroup", None)
    return (
        group is not None
        and isinstance(error, group)
        and (state.stop is not None or state.usage_error is not None)
    )


def _usage_of(state: RunState, error: DurableUsageError) -> DurableUsageError:
    if state.usage_error is None:
        state.usage_error = error
    return error


def _check_open(tx: Tx) -> None:
    if not tx.transaction.is_active:
        raise DurableUsageError(
            "a transactional step must not commit or roll back its connection: the runner "
            "commits its writes together with its checkpoint (they may now be committed "
            "without it)"
        )


@dataclass
class Tx:
    connection: Any
    transaction: Any
    session: Any
    resource: Any


# --- sync -------------------------------------------------------------------


def drive(plan: Plan[T], io: SyncIO) -> T:
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            request = plan.send(reply) if error is None else plan.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        reply, error = None, None
        try:
            reply = io.perform(request)
        except BaseException as e:
            error = e


class SyncIO:
    def __init__(self, backend: Backend, workflow: Workflow | None = None) -> None:
        self.backend = backend
        self.workflow = workflow
        self._heartbeat: Pending | None = None
        self._saves = threading.Lock()
        self._saved_seq = 0

    def perform(self, request: Request) -> Any:
        if isinstance(request, Save) and request.seq is not None:
            with self._saves:  # steps run from threads: never an older snapshot last
                if request.seq < self._saved_seq:
                    return True  # a newer snapshot, holding this outcome too, is stored
                answer = store_call(self.backend.kv, request)
                self._saved_seq = request.seq
                return answer
        if isinstance(request, Call):
            result = request.fn(*request.args)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise DurableUsageError(
                    f"{request.fn!r} returned an awaitable: use durable.run_async for async code"
                )
            return result
        if isinstance(request, Begin):
            return self._begin(request.session)
        if isinstance(request, Flush):
            _check_open(request.tx)
            if request.tx.session is not None:
                request.tx.session.flush()
            return None
        if isinstance(request, Finish):
            return self._finish(request.tx, request.commit)
        if isinstance(request, RunBody):
            return self._body(request.state)
        if isinstance(request, StartHeartbeat):
            assert request.state.lease is not None
            self._heartbeat = heartbeats.start(self._renew, request.state.lease)
            return None
        if isinstance(request, StopHeartbeat):
            self.abandon()
            return None
        return store_call(self.backend.kv, request)

    def _renew(self, renewal: Renew) -> Any:
        return store_call(self.backend.kv, renewal)

    def _begin(self, session: bool) -> Tx:
        engine = self.backend.engine
        if engine is None:
            raise _no_engine()
        conn: Connection = engine.connect()
        try:
            if in_autocommit(conn):  # the store's own engine, or a caller's in AUTOCOMMIT
                conn.execution_options(isolation_level=conn.default_isolation_level)
            trans = conn.begin()
        except BaseException:
            conn.close()
            raise
        orm = Session(bind=conn) if session else None
        return Tx(conn, trans, orm, orm if orm is not None else conn)

    @staticmethod
    def _finish(tx: Tx, commit: bool) -> None:
        try:
            if commit:
                tx.transaction.commit()
            else:
                tx.transaction.rollback()
        finally:
            if tx.session is not None:
                tx.session.close()
            tx.connection.close()

    def _body(self, state: RunState) -> BodyOutcome:
        assert self.workflow is not None
        step = Step(state, self)
        try:
            value = self.workflow(step, state.options.deps)
            if inspect.isawaitable(value):
                if inspect.iscoroutine(value):
                    value.close()
                raise _usage_of(
                    state,
                    DurableUsageError(
                        "an async workflow needs durable.run_async (durable.run would "
                        "return its coroutine unrun)"
                    ),
                )
            return BodyOutcome(value=value)
        except StepExit as e:
            return BodyOutcome(exit=e.result)
        except DurableUsageError:
            raise
        except Exception as e:
            return BodyOutcome(raised=e)
        except BaseException as e:
            if _ended_inside_group(state, e):
                return BodyOutcome(exit=state.stop)
            raise

    def abandon(self) -> None:
        beat, self._heartbeat = self._heartbeat, None
        if beat is not None:
            heartbeats.stop(beat)


class Step:
    """What the workflow calls: ``step(fn, key=...)``, ``step.transaction(fn, key=...)``."""

    def __init__(self, state: RunState, io: SyncIO) -> None:
        self._state = state
        self._io = io

    @property
    def workflow_id(self) -> str:
        return self._state.options.workflow_id

    def __call__(self, fn: Callable[[], Any], *, key: str) -> Any:
        """Run ``fn`` once under ``key``; on a rerun return its stored outcome instead."""
        return drive(step_plan(self._state, fn, key, None), self._io)

    def transaction(self, fn: Callable[[Any], Any], *, key: str, session: bool = False) -> Any:
        """Run ``fn(connection)`` (``fn(session)`` with ``session=True``) in a transaction
        that also writes this step's checkpoint: both commit, or neither does."""
        return drive(step_plan(self._state, fn, key, session), self._io)


# --- asyncio ----------------------------------------------------------------


async def adrive(plan: Plan[T], io: AsyncIO) -> T:
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            request = plan.send(reply) if error is None else plan.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        reply, error = None, None
        try:
            reply = await io.perform(request)
        except GeneratorExit:
            # The coroutine is being closed: nothing may be awaited any more.
            io.abandon()
            with contextlib.suppress(RuntimeError):
                plan.close()
            raise
        except BaseException as e:
            error = e


async def _settle(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


class AsyncIO:
    def __init__(self, backend: Backend, workflow: Workflow | None = None) -> None:
        self.backend = backend
        self.workflow = workflow
        self._heartbeat: AsyncHeartbeat | None = None
        self._saves: asyncio.Lock | None = None
        self._saved_seq = 0

    async def perform(self, request: Request) -> Any:
        if isinstance(request, Save) and request.seq is not None:
            if self._saves is None:
                self._saves = asyncio.Lock()
            async with self._saves:  # steps gathered: never an older snapshot last
                if request.seq < self._saved_seq:
                    return True
                answer = await _settle(store_call(self.backend.kv, request))
                self._saved_seq = request.seq
                return answer
        if isinstance(request, Call):
            return await _settle(request.fn(*request.args))
        if isinstance(request, Begin):
            return await self._begin(request.session)
        if isinstance(request, Flush):
            _check_open(request.tx)
            if request.tx.session is not None:
                await request.tx.session.flush()
            return None
        if isinstance(request, Finish):
            return await self._finish(request.tx, request.commit)
        if isinstance(request, RunBody):
            return await self._body(request.state)
        if isinstance(request, StartHeartbeat):
            assert request.state.lease is not None
            self._heartbeat = AsyncHeartbeat(self._renew, request.state.lease)
            return None
        if isinstance(request, StopHeartbeat):
            beat, self._heartbeat = self._heartbeat, None
            if beat is not None:
                await beat.stop()
            return None
        return await _settle(store_call(self.backend.kv, request))

    def abandon(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.abandon()

    async def _renew(self, renewal: Renew) -> Any:
        return await _settle(store_call(self.backend.kv, renewal))

    async def _begin(self, session: bool) -> Tx:
        engine = self.backend.engine
        if engine is None:
            raise _no_engine()
        conn: AsyncConnection = await engine.connect()
        try:
            sync = conn.sync_connection
            if sync is not None and in_autocommit(sync):
                await conn.execution_options(isolation_level=sync.default_isolation_level)
            trans = await conn.begin()
        except BaseException:
            await conn.close()
            raise
        orm = AsyncSession(bind=conn) if session else None
        return Tx(conn, trans, orm, orm if orm is not None else conn)

    @staticmethod
    async def _finish(tx: Tx, commit: bool) -> None:
        try:
            if commit:
                await tx.transaction.commit()
            else:
                await tx.transaction.rollback()
        finally:
            if tx.session is not None:
                await tx.session.close()
            await tx.connection.close()

    async def _body(self, state: RunState) -> BodyOutcome:
        assert self.workflow is not None
        step = AsyncStep(state, self)
        try:
            running = self.workflow(step, state.options.deps)
            if not inspect.isawaitable(running):
                raise DurableUsageError(
                    "durable.run_async needs an async workflow (async def ...): "
                    "its steps are awaited"
                )
            return BodyOutcome(value=await running)
        except StepExit as e:
            return BodyOutcome(exit=e.result)
        except DurableUsageError:
            raise
        except Exception as e:
            if _ended_inside_group(state, e):
                return BodyOutcome(exit=state.stop)
            return BodyOutcome(raised=e)
        except BaseException as e:
            if _ended_inside_group(state, e):  # a TaskGroup wraps the failed step's exit
                return BodyOutcome(exit=state.stop)
            raise


class AsyncStep:
    """The asyncio ``step``: ``await step(fn, key=...)``; ``fn`` may be sync or async."""

    def __init__(self, state: RunState, io: AsyncIO) -> None:
        self._state = state
        self._io = io

    @property
    def workflow_id(self) -> str:
        return self._state.options.workflow_id

    async def __call__(self, fn: Callable[[], Any | Awaitable[Any]], *, key: str) -> Any:
        return await adrive(step_plan(self._state, fn, key, None), self._io)

    async def transaction(
        self, fn: Callable[[Any], Awaitable[Any]], *, key: str, session: bool = False
    ) -> Any:
        """``await fn(connection)`` (an ``AsyncConnection``, or ``AsyncSession`` with
        ``session=True``) in a transaction that also writes this step's checkpoint."""
        return await adrive(step_plan(self._state, fn, key, session), self._io)
