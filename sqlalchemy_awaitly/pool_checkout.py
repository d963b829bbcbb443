"""One call's connection from the engine's pool: SQLAlchemy's checkout, or its record alone.

SQLAlchemy's checkout wraps the pooled connection in a proxy with a weakref
finalizer, fires the ``checkout``, ``reset`` and ``checkin`` events and
rolls the connection back on its way in. For a store call (one autocommit
statement on a psycopg connection) that costs 5 to 11% of the calls a
second (benchmark 1d), which is what kept single calls under their
targets against raw psycopg.

So when nothing could tell the difference, the store takes the pool's
connection record directly: the same ``QueuePool`` queue (fair waiting, one
``pool_timeout``, overflow), the same record (``pool_recycle``, pool-wide
invalidation, the ``connect``, ``invalidate`` and ``checkin`` events), the
same checkout guard, and the record marked in use while it is out. Nothing
could tell when the pool is a plain ``QueuePool`` with no ``pool_pre_ping``,
no debug echo, and no ``checkout`` or ``reset`` listener other than the
store's guard. The skipped reset is a rollback; the store hands back only a
connection with no transaction open, and invalidates any other. In every
other case the full checkout runs.

This reaches into the pool's internals (``_do_get``, the record's
``get_connection`` and ``checkin``). :func:`records_supported` checks they
are there, and a test fails if a SQLAlchemy upgrade takes them away, so the
speed is never lost without notice.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, Pool, PoolProxiedConnection, QueuePool
from sqlalchemy.pool.base import _ConnectionRecord
from sqlalchemy.util import queue as pool_queue

from .pool_guards import Listener

InTransaction = Callable[[Any], bool]  # of a driver connection: is a transaction open?


class _TakenDirectly:
    """What a record taken directly refers to while it is out, as others refer to their proxy.

    SQLAlchemy reads a record with such a reference as in use (``in_use``)
    and accepts its ``checkin()``; the object lives as long as the module.
    """


_TAKER = _TakenDirectly()
_IN_USE = weakref.ref(_TAKER)

_POOL_INTERNALS = (
    "_do_get",
    "_return_conn",
    "_invalidate_time",
    "_pre_ping",
    "_should_log_debug",
    "_recycle",
    "_pool",
)
_RECORD_INTERNALS = (
    "get_connection",
    "checkin",
    "_checkin_failed",
    "fairy_ref",
    "starttime",
    "_soft_invalidate_time",
)


_PLAIN_POOLS = (QueuePool, AsyncAdaptedQueuePool)  # the same queue pool, sync or asyncio


def records_supported(pool: Pool) -> bool:
    """True if this SQLAlchemy's ``QueuePool`` has what taking a record directly uses."""
    return (
        isinstance(pool, QueuePool)
        and all(hasattr(pool, name) for name in _POOL_INTERNALS)
        and all(hasattr(_ConnectionRecord, name) for name in _RECORD_INTERNALS)
    )


def unobserved(pool: Pool) -> bool:
    """True if taking a record directly is indistinguishable from a checkout of ``pool``.

    The one ``checkout`` listener allowed is the store's guard, which
    :class:`Checkouts` adds to the engine before its first call.
    """
    if type(pool) not in _PLAIN_POOLS or pool._pre_ping:
        return False
    dispatch = pool.dispatch
    return not (dispatch.reset or pool._should_log_debug()) and len(dispatch.checkout) == 1


class Held:
    """A pooled connection held for one call; :meth:`release` gives it back, always."""

    __slots__ = ("_in_transaction", "_pool", "_proxy", "_record", "connection", "info")

    @property
    def dbapi_connection(self) -> Any:
        """The pool's connection: the driver's, or SQLAlchemy's adapter of an asyncio one."""
        holder = self._proxy if self._proxy is not None else self._record
        return cast(Any, holder).dbapi_connection

    def __init__(
        self,
        pool: Pool,
        connection: Any,
        info: dict[Any, Any],
        *,
        record: _ConnectionRecord | None = None,
        proxy: PoolProxiedConnection | None = None,
        in_transaction: InTransaction | None = None,
    ) -> None:
        self.connection = connection  # the driver's connection
        self.info = info  # the pooled connection's own, kept while it lives
        self._pool = pool
        self._record = record
        self._proxy = proxy
        self._in_transaction = in_transaction  # needed with a record

    def invalidate(self, error: BaseException) -> None:
        """Close it, and have the pool replace every connection opened before it.

        The server or the network dropped this session; the others of its
        generation are likely gone too (SQLAlchemy's Connection does the same).
        """
        if self._proxy is not None:
            self._pool._invalidate(self._proxy, error)
            return
        record = cast(_ConnectionRecord, self._record)
        if self._pool._invalidate_time < record.starttime:
            self._pool._invalidate_time = time.time()
        record.invalidate(error)

    def release_without_io(self) -> bool:
        """Give it back if that needs no I/O (an asyncio caller then needs no greenlet).

        False: nothing was done; :meth:`release` must run, in a greenlet for asyncio.
        It would do I/O to reset a proxy's connection, to close a connection left in a
        transaction, or to close an overflow connection the full queue has no room for.
        """
        record = self._record
        if record is None or self._pool._pool.full():  # type: ignore[attr-defined]
            return False
        if record.dbapi_connection is None:
            return False
        if cast(InTransaction, self._in_transaction)(self.connection):
            return False
        record.checkin()
        return True

    def release(self) -> None:
        if self._proxy is not None:
            self._proxy.close()
            return
        record = cast(_ConnectionRecord, self._record)
        in_transaction = cast(InTransaction, self._in_transaction)
        if record.dbapi_connection is not None and in_transaction(self.connection):
            record.invalidate()  # the reset skipped would have had work to do
        record.checkin()


def _take_record(pool: QueuePool, guard: Listener, in_transaction: InTransaction) -> Held | None:
    """The next record of ``pool``, checked by ``guard``; None: use a full checkout."""
    record = cast(_ConnectionRecord, pool._do_get())
    try:
        dbapi_connection = record.get_connection()
    except BaseException as error:
        record._checkin_failed(error, _fairy_was_created=False)
        raise
    record.fairy_ref = cast(Any, _IN_USE)
    try:
        guard(dbapi_connection, record, None)
    except exc.DisconnectionError as error:
        # As the pool's checkout does: drop it (and its generation if asked),
        # then let the full checkout connect afresh.
        if error.invalidate_pool:
            pool._invalidate_time = time.time()
        record.invalidate(error)
        record.checkin()
        return None
    except BaseException:
        record.checkin()
        raise
    return _holding(pool, record, in_transaction)


_HELD = "sqlalchemy_awaitly.held"  # in a pooled connection's info: its Held, made once


def _holding(pool: Pool, record: _ConnectionRecord, in_transaction: InTransaction) -> Held:
    """A record taken directly, as the call holds it.

    One :class:`Held` per pooled connection, made again only when the record has
    reconnected: a record is out to one call at a time, and making one per call
    cost an asyncio call about 2 us (benchmark 3).
    """
    info = record.info
    connection = record.driver_connection
    held = info.get(_HELD)
    if (
        held is None
        or held.connection is not connection
        or held._in_transaction is not in_transaction  # another store's, on a shared engine
    ):
        held = info[_HELD] = Held(
            pool, connection, info, record=record, in_transaction=in_transaction
        )
    return cast(Held, held)


def _usable_as_is(pool: QueuePool, record: _ConnectionRecord) -> bool:
    """True if ``record.get_connection()`` would hand back its connection with no
    reconnect (so no I/O): the checks of SQLAlchemy's ``get_connection``."""
    if record.dbapi_connection is None:
        return False
    if pool._recycle > -1 and time.time() - record.starttime > pool._recycle:
        return False
    return pool._invalidate_time <= record.starttime >= record._soft_invalidate_time


class Checkouts:
    """Takes one engine's pooled connections for the store's calls, the lighter way if it can."""

    def __init__(self, engine: Engine, guard: Listener, in_transaction: InTransaction) -> None:
        self._engine = engine
        self._guard = guard
        self._in_transaction = in_transaction
        self._records = records_supported(engine.pool)

    def take(self) -> Held:
        pool = self._engine.pool
        if self._records and unobserved(pool):
            held = _take_record(cast(QueuePool, pool), self._guard, self._in_transaction)
            if held is not None:
                return held
        proxy = self._engine.raw_connection()
        return Held(pool, proxy.driver_connection, proxy.info, proxy=proxy)

    def take_without_io(self) -> Held | None:
        """A pooled connection that is there and usable as it is, or None: :meth:`take`.

        For asyncio, where :meth:`take` runs in a greenlet because waiting for a
        connection or making one awaits: most calls find one free and need
        neither. A record the guard turns away goes back to the queue, marked
        (its connection forgotten, or the pool's older connections invalidated)
        for :meth:`take` to replace.
        """
        pool = self._engine.pool
        if not (self._records and unobserved(pool)):
            return None
        queue = cast(QueuePool, pool)._pool
        try:
            record = cast(_ConnectionRecord, queue.get_nowait())
        except pool_queue.Empty:
            return None
        if not _usable_as_is(cast(QueuePool, pool), record):
            queue.put_nowait(record)
            return None
        try:
            self._guard(record.dbapi_connection, record, None)
        except exc.DisconnectionError as error:
            if error.invalidate_pool:
                pool._invalidate_time = time.time()
            queue.put_nowait(record)
            return None
        record.fairy_ref = cast(Any, _IN_USE)
        return _holding(pool, record, self._in_transaction)
