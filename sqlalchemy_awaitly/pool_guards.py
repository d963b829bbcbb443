"""Checks at checkout that keep two kinds of dead connection away from every call.

- **Another process's connection.** A child of ``fork`` (multiprocessing,
  gunicorn and Celery prefork workers) inherits the pool with its parent's
  sockets; using one mixes both processes' traffic on one server session.
  This is SQLAlchemy's recipe from "Using Connection Pools with
  Multiprocessing or os.fork()": remember which process opened each
  connection, and hand a foreign one back as disconnected without closing it
  (closing would end the parent's session; psycopg never closes a connection
  it garbage-collects in another process either). So workers are safe with
  or without ``engine.dispose(close=False)`` in the child.
- **A connection the server has hung up** (psycopg2, asyncpg). An idle
  PostgreSQL connection whose socket has something to read has been told
  goodbye (a restart, ``pg_terminate_backend``, ``idle_session_timeout``, a
  proxy's reset): the server sends nothing else unasked to a session that
  does not LISTEN. One ``select`` with no wait (against a round trip for
  ``pool_pre_ping``) finds it before a statement is sent to it, and
  SQLAlchemy then discards every connection opened before that moment, so
  after a restart no call fails and none is left to a retry that could not
  tell whether it ran. psycopg needs no such check: it reports the goodbye
  with the next statement (SQLSTATE 57P01), which the store then repeats.

The listeners sit on the engine, so they follow the pool when ``dispose()``
replaces it; each engine gets them once, whoever created it.
"""

from __future__ import annotations

import os
import select
import threading
import weakref
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

_OPENED_BY = "sqlalchemy_awaitly.pid"

# The checkout guard; the store's own checkout (``pool_checkout``) calls it
# with no proxy, as the pool's event calls it with one.
Listener = Callable[[Any, ConnectionPoolEntry, PoolProxiedConnection | None], None]
_guarded: weakref.WeakKeyDictionary[Engine, Listener] = weakref.WeakKeyDictionary()
_guarding = threading.Lock()


# This process's id, kept current across fork: os.getpid() is a system call,
# and the guard runs at every checkout.
_pid = os.getpid()


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_OPENED_BY] = _pid


def hung_up(dbapi_connection: Any) -> bool:
    """True if the server has closed (or is closing) this idle connection."""
    fd = _socket_of(dbapi_connection)
    if fd is None:
        return False
    if fd < 0:
        return True
    readable, _, _ = select.select((fd,), (), (), 0)
    return bool(readable)


def _socket_of(dbapi_connection: Any) -> int | None:
    """The connection's socket (-1: the driver knows it is closed), or None (no socket)."""
    fileno = getattr(dbapi_connection, "fileno", None)  # psycopg, psycopg2
    if fileno is None:
        inner = getattr(dbapi_connection, "_connection", None)  # SQLAlchemy's async adapters
        if inner is None:
            return None
        is_closed = getattr(inner, "is_closed", None)  # asyncpg
        if is_closed is not None and is_closed():
            return -1
        fileno = getattr(inner, "fileno", None)  # psycopg's AsyncConnection
        if fileno is None:
            # asyncpg: the event loop reads its socket, but it may not have run
            # since the goodbye arrived.
            transport = getattr(inner, "_transport", None)
            sock = None if transport is None else transport.get_extra_info("socket")
            return None if sock is None else int(sock.fileno())
    try:
        return int(fileno())
    except Exception:
        return -1  # the driver already knows it is closed


class _ServerHungUp(exc.DisconnectionError):
    """Tells the pool to discard every connection opened before now, not just this one."""

    invalidate_pool = True


def _checkout_guard(installed_by: int, check_socket: bool) -> Listener:
    def on_checkout(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection | None
    ) -> None:
        pid = _pid
        # Opened before the guard was added: by the process that added it.
        opened_by = record.info.setdefault(_OPENED_BY, installed_by)
        if opened_by != pid:
            # Forget it, do not close it (the typed interfaces call these read-only).
            cast(Any, record).dbapi_connection = None
            if proxy is not None:
                cast(Any, proxy).dbapi_connection = None
            raise exc.DisconnectionError(
                f"connection opened by process {opened_by}, checked out in process {pid}"
            )
        if check_socket and hung_up(dbapi_connection):
            raise _ServerHungUp("the server closed this pooled connection")

    return on_checkout


def _needs_socket_check(engine: Engine) -> bool:
    """psycopg reports the server's goodbye itself (SQLSTATE 57P01 on the next statement,
    which then counts as not run), so its checkouts skip the ``select``: in a call
    it costs more than its 2 us alone (about 8 us measured in the benchmark's loop)."""
    dialect = engine.dialect
    return dialect.name == "postgresql" and dialect.driver != "psycopg"


def guard_pool(engine: Engine) -> Listener:
    """Add the checkout guard to ``engine`` (the sync engine of an AsyncEngine), once."""
    with _guarding:
        if engine in _guarded:
            return _guarded[engine]
        listener = _checkout_guard(_pid, _needs_socket_check(engine))
        event.listen(engine, "connect", _on_connect)
        event.listen(engine, "checkout", listener)
        _guarded[engine] = listener
        return listener
