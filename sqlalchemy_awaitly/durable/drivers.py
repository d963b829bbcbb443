"""Performing the plans' I/O: blocking calls for ``run``, awaits for ``run_async``.

The two drivers differ only in how they call: which store method serves a
request is decided once, in :func:`store_call`, against the typed protocols
of ``storage.py``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import inspect
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from ..aio import AsyncSQLAlchemyKeyValueStore
from ..errors import ConfigurationError
from ..persistence import DEFAULT_PREFIX, AsyncStatePersistence, StatePersistence
from ..store import SQLAlchemyKeyValueStore
from ..wire import json_text
from .cancel import renewed
from .children import Child, run_child, run_child_async
from .errors import DurableUsageError
from .forms import StepForms, Workflow, usage_of
from .heartbeat import AsyncHeartbeat, Pending, heartbeats
from .memory import MemoryStore, default_store
from .parallel import TaskGroup, ThreadGroup
from .requests import (
    Abandon,
    Acquire,
    AcquireAndLoad,
    Begin,
    Call,
    Delete,
    DeleteMany,
    Finish,
    Flush,
    Keys,
    Load,
    LoadMany,
    NextDone,
    Pause,
    Plan,
    Release,
    Renew,
    Request,
    RunBody,
    Save,
    Spawn,
    StartHeartbeat,
    StopHeartbeat,
    Touch,
)
from .results import Err, Ok
from .state import BodyOutcome, Lease, RunState, StepExit
from .steps import StepSpec, step_plan
from .storage import AsyncKeyValue, AsyncMemory, AsyncTransactional, KeyValue, Transactional
from .timed import await_with_limit, call_with_limit

T = TypeVar("T")


K = TypeVar("K", KeyValue, AsyncKeyValue)
D = TypeVar("D", Transactional, AsyncTransactional)


@dataclass(frozen=True)
class Backend(Generic[K, D]):
    """Where a run keeps its rows: its store, the same store if it is on a database
    (``db``: transactional steps need its engine), the prefix, and the scope the
    in-process guard tells runs of one id apart by."""

    kv: K
    db: D | None
    prefix: str
    scope: object


SyncBackend = Backend[KeyValue, Transactional]
AsyncBackend = Backend[AsyncKeyValue, AsyncTransactional]


def _store_of(store: object) -> tuple[object, str]:
    """The key/value store behind ``store`` (a persistence's own), and its prefix."""
    if store is None:
        return default_store, DEFAULT_PREFIX
    if isinstance(store, (StatePersistence, AsyncStatePersistence)):
        return store.store, store.prefix
    if not isinstance(store, (SQLAlchemyKeyValueStore, AsyncSQLAlchemyKeyValueStore, MemoryStore)):
        raise TypeError(
            "store must be a StatePersistence, a key/value store or a MemoryStore, "
            f"got {type(store).__name__}"
        )
    return store, DEFAULT_PREFIX


def _table_scope(kv: SQLAlchemyKeyValueStore | AsyncSQLAlchemyKeyValueStore) -> object:
    return (str(kv.engine.url), kv.table.key)


def sync_backend(store: object, prefix: str | None) -> SyncBackend:
    kv, own_prefix = _store_of(store)
    if isinstance(kv, SQLAlchemyKeyValueStore):
        return Backend(kv, kv, prefix or own_prefix, _table_scope(kv))
    if isinstance(kv, MemoryStore):
        return Backend(kv, None, prefix or own_prefix, id(kv))
    raise ConfigurationError("an asyncio store needs durable.run_async")


def async_backend(store: object, prefix: str | None) -> AsyncBackend:
    kv, own_prefix = _store_of(store)
    if isinstance(kv, AsyncSQLAlchemyKeyValueStore):
        return Backend(kv, kv, prefix or own_prefix, _table_scope(kv))
    if isinstance(kv, MemoryStore):
        return Backend(AsyncMemory(kv), None, prefix or own_prefix, id(kv))
    raise ConfigurationError(
        "a sync store would block the event loop: give durable.run_async an asyncio store"
    )


def store_call(backend: SyncBackend | AsyncBackend, request: Request) -> object:
    """The store call that serves ``request``: its answer, or on an asyncio store the
    awaitable of it. One mapping for both, checked by mypy against both protocols."""
    kv = backend.kv
    if isinstance(request, Load):
        return kv.get(request.key)
    if isinstance(request, Save):
        if request.tx is not None:  # the checkpoint joins the step's transaction
            return _in_transaction(backend, request)
        if request.guard is None:
            return kv.set(request.key, request.text, request.ttl)
        guard_key, guard_value = request.guard
        return kv.set_guarded(
            request.key, request.text, request.ttl, guard_key=guard_key, guard_value=guard_value
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
    if isinstance(request, AcquireAndLoad):
        return kv.add_and_get(request.key, request.value, request.ttl, other_key=request.load)
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


def _in_transaction(backend: SyncBackend | AsyncBackend, request: Save) -> object:
    db, tx = backend.db, request.tx
    assert db is not None and tx is not None  # Begin refused a store without a database
    if request.guard is None:
        return db.set(request.key, request.text, request.ttl, connection=tx.connection)
    guard_key, guard_value = request.guard
    return db.set_guarded(
        request.key,
        request.text,
        request.ttl,
        guard_key=guard_key,
        guard_value=guard_value,
        connection=tx.connection,
    )


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


def _in_context(context: contextvars.Context, renew: Callable[[Renew], object], r: Renew) -> object:
    return context.run(renew, r)


# What a step function usually returns: never awaitable, and ``inspect.isawaitable``
# (an ABC check for anything else) costs a plain step more than its own call.
_PLAIN = json_text.SCALARS | {dict, list, tuple, Ok, Err}


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
    def __init__(self, backend: SyncBackend, workflow: Workflow | None = None) -> None:
        self.backend = backend
        self.workflow = workflow
        self._heartbeat: Pending | None = None
        self._lease: Lease | None = None
        self._saves = threading.Lock()
        self._saved_seq = 0

    def perform(self, request: Request) -> Any:
        if isinstance(request, Save) and request.seq is not None:
            with self._saves:  # steps run from threads: never an older snapshot last
                if request.seq < self._saved_seq:
                    return True  # a newer snapshot, holding this outcome too, is stored
                answer = store_call(self.backend, request)
                self._saved_seq = request.seq
                return answer
        if isinstance(request, Pause):
            request.clock.sleep(request.seconds)
            return None
        if isinstance(request, Call):
            if request.limit is None:
                result = request.fn(*request.args)
            else:
                result = call_with_limit(request.fn, request.args, request.limit)
            if type(result) not in _PLAIN and inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise DurableUsageError(
                    f"{request.fn!r} returned an awaitable: use durable.run_async for async code"
                )
            return result
        if isinstance(request, Spawn):
            return ThreadGroup(request.members, request.limit)
        if isinstance(request, NextDone):
            return request.group.next_done()
        if isinstance(request, Abandon):
            request.group.abandon()
            return None
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
            self._lease = request.state.lease
            renew: Callable[[Renew], object] = self._renew
            if request.state.trace is not None:  # renewals in the run's span, as a task's are
                context = contextvars.copy_context()
                renew = partial(_in_context, context, self._renew)
            self._heartbeat = heartbeats.start(renew, request.state.lease)
            return None
        if isinstance(request, StopHeartbeat):
            self.abandon()
            return None
        return store_call(self.backend, request)

    def _renew(self, renewal: Renew) -> object:
        assert self._lease is not None
        return drive(renewed(self._lease, renewal), self)

    def _begin(self, session: bool) -> Tx:
        if self.backend.db is None:
            raise _no_engine()
        conn: Connection = self.backend.db.engine.connect()
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
                raise usage_of(
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


class Step(StepForms[Any]):
    """The sync ``step``: each form returns the step's value."""

    def __init__(self, state: RunState, io: SyncIO) -> None:
        super().__init__(state)
        self._io = io

    def _go(self, spec: StepSpec) -> Any:
        return drive(step_plan(self._state, spec), self._io)

    def _child(self, child: Child) -> Callable[[], Any]:
        return partial(run_child, child)


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


async def _stored(backend: AsyncBackend, request: Request) -> object:
    answer = store_call(backend, request)
    assert inspect.isawaitable(answer)  # every call of an AsyncKeyValue is awaitable
    return await answer


class AsyncIO:
    def __init__(self, backend: AsyncBackend, workflow: Workflow | None = None) -> None:
        self.backend = backend
        self.workflow = workflow
        self._heartbeat: AsyncHeartbeat | None = None
        self._lease: Lease | None = None
        self._saves: asyncio.Lock | None = None
        self._saved_seq = 0

    async def perform(self, request: Request) -> Any:
        if isinstance(request, Save) and request.seq is not None:
            if self._saves is None:
                self._saves = asyncio.Lock()
            async with self._saves:  # steps gathered: never an older snapshot last
                if request.seq < self._saved_seq:
                    return True
                answer = await _stored(self.backend, request)
                self._saved_seq = request.seq
                return answer
        if isinstance(request, Pause):
            await request.clock.asleep(request.seconds)
            return None
        if isinstance(request, Call):
            if request.limit is not None:
                return await await_with_limit(request.fn, request.args, request.limit)
            return await _settle(request.fn(*request.args))
        if isinstance(request, Spawn):
            return TaskGroup(request.members, request.limit)
        if isinstance(request, NextDone):
            return await request.group.next_done()
        if isinstance(request, Abandon):
            await request.group.abandon()
            return None
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
            self._lease = request.state.lease
            self._heartbeat = AsyncHeartbeat(self._renew, request.state.lease)
            return None
        if isinstance(request, StopHeartbeat):
            beat, self._heartbeat = self._heartbeat, None
            if beat is not None:
                await beat.stop()
            return None
        return await _stored(self.backend, request)

    def abandon(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.abandon()

    async def _renew(self, renewal: Renew) -> object:
        assert self._lease is not None
        return await adrive(renewed(self._lease, renewal), self)

    async def _begin(self, session: bool) -> Tx:
        if self.backend.db is None:
            raise _no_engine()
        conn: AsyncConnection = await self.backend.db.engine.connect()
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


class AsyncStep(StepForms[Awaitable[Any]]):
    """The asyncio ``step``: ``await step(fn, key=...)``; ``fn`` may be sync or async."""

    def __init__(self, state: RunState, io: AsyncIO) -> None:
        super().__init__(state)
        self._io = io

    def _go(self, spec: StepSpec) -> Awaitable[Any]:
        return adrive(step_plan(self._state, spec), self._io)

    def _child(self, child: Child) -> Callable[[], Any]:
        return partial(run_child_async, child)
