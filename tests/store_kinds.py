"""Stores on every kind of engine the fault tests cover: the store's own, or a caller's.

A kind is ``<owner>-<driver>``: ``own-<driver>`` builds the engine from a URL,
``caller-<driver>`` passes an engine the test made with that driver
(``psycopg``, ``psycopg_async``, ``psycopg2``, ``asyncpg``); every one of them
runs on the store's direct path.
Async stores are driven through :class:`conftest.SyncView` on one loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from conftest import SyncView
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sqlalchemy_awaitly import AsyncSQLAlchemyKeyValueStore, SQLAlchemyKeyValueStore

KINDS = [
    "own-psycopg",
    "own-psycopg_async",
    "own-psycopg2",
    "own-asyncpg",
    "caller-psycopg",
    "caller-psycopg2",
    "caller-asyncpg",
]
ASYNC_DRIVERS = ("psycopg_async", "asyncpg")
# Kinds whose connections can carry an application_name: asyncpg takes it only as a
# connect argument (server_settings), which a store's own engine does not pass on.
NAMED_KINDS = [kind for kind in KINDS if kind != "own-asyncpg"]


def with_driver(url: str, driver: str) -> str:
    name = "postgresql+" + ("psycopg" if driver == "psycopg_async" else driver)
    return make_url(url).set(drivername=name).render_as_string(hide_password=False)


def _named(url: str, driver: str, application_name: str | None) -> tuple[str, dict[str, Any]]:
    """The URL, and connect_args, that give each connection ``application_name``."""
    if application_name is None:
        return url, {}
    if driver == "asyncpg":
        return url, {"server_settings": {"application_name": application_name}}
    named = make_url(url).update_query_dict({"application_name": application_name})
    return named.render_as_string(hide_password=False), {}


@contextmanager
def store_of_kind(
    kind: str,
    url: str,
    loop: asyncio.AbstractEventLoop,
    *,
    application_name: str | None = None,
    pool: dict[str, Any] | None = None,
    **options: Any,
) -> Iterator[Any]:
    """A store of ``kind`` on the database at ``url``; closed (and its engine disposed) after.

    ``pool``: pool keywords for the engine, whoever builds it.
    """
    owner, driver = kind.split("-")
    if application_name is not None and kind not in NAMED_KINDS:
        raise ValueError(f"{kind} connections cannot be given an application_name")
    is_async = driver in ASYNC_DRIVERS
    target, connect_args = _named(with_driver(url, driver), driver, application_name)
    engine: Engine | AsyncEngine | None = None
    if owner == "caller":
        arguments: dict[str, Any] = {**(pool or {}), "connect_args": connect_args}
        engine = (
            create_async_engine(target, **arguments)
            if is_async
            else create_engine(target, **arguments)
        )
        options["engine"] = engine
    else:
        options["connection_string"] = target
        options["pool"] = pool
    store: Any
    if is_async:
        store = SyncView(AsyncSQLAlchemyKeyValueStore(**options), loop)
    else:
        store = SQLAlchemyKeyValueStore(**options)
    try:
        yield store
    finally:
        store.close()
        if isinstance(engine, AsyncEngine):
            loop.run_until_complete(engine.dispose())
        elif engine is not None:
            engine.dispose()
