"""A database that cannot be had at start-up is the same typed error as one lost later.

Unreachable is ``StoreUnavailableError``; a refused password or user is
``CredentialsRejectedError`` and a missing database (or SQLite folder)
``DatabaseNotFoundError``, both subclasses of it, so code that catches what
the README names catches these too. The message says why, and never shows
the password. Each is raised from the factory, from ``setup()`` and from the
first call, sync and async; the CLI exits 3 with the same message.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PostgresHandle
from postgres_server import PASSWORD_ROLE
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from test_cli import cli

from sqlalchemy_awaitly import (
    AsyncSQLAlchemyKeyValueStore,
    CredentialsRejectedError,
    DatabaseNotFoundError,
    SQLAlchemyKeyValueStore,
    StoreUnavailableError,
    create_async_postgres_persistence,
    create_postgres_persistence,
)

SECRET = "not-the-Password-9"


def _factory(url: str) -> None:
    create_postgres_persistence(url).close()


async def _aiosqlite_threads_ended() -> None:
    """aiosqlite answers its failed connect from a worker thread it does not join
    (omnilib/aiosqlite#241); let it answer before the loop closes, within 5 s."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
        "_connection_worker_thread" in t.name for t in threading.enumerate()
    ):
        await asyncio.sleep(0.01)


def _async_factory(url: str) -> None:
    async def go() -> None:
        try:
            await (await create_async_postgres_persistence(url)).close()
        finally:
            await _aiosqlite_threads_ended()

    asyncio.run(go())


def _first_call(url: str) -> None:
    store = SQLAlchemyKeyValueStore(url)
    try:
        store.get("k")
    finally:
        store.close()


def _async_first_call(url: str) -> None:
    async def go() -> None:
        store = AsyncSQLAlchemyKeyValueStore(url)
        try:
            await store.get("k")
        finally:
            await store.close()
            await _aiosqlite_threads_ended()

    asyncio.run(go())


WAYS: dict[str, Callable[[str], None]] = {
    "factory": _factory,
    "async-factory": _async_factory,
    "first-call": _first_call,
    "async-first-call": _async_first_call,
}


def _raises_exactly(kind: type[Exception], url: str) -> list[str]:
    messages = []
    for way in WAYS.values():
        with pytest.raises(StoreUnavailableError) as caught:
            way(url)
        assert type(caught.value) is kind, (way.__name__, repr(caught.value))
        assert SECRET not in str(caught.value)
        messages.append(str(caught.value))
    return messages


def test_an_unreachable_server() -> None:
    messages = _raises_exactly(StoreUnavailableError, f"postgresql://app:{SECRET}@127.0.0.1:9/db")
    assert all("could not be reached" in m and "app:***@127.0.0.1:9" in m for m in messages)


def test_a_missing_sqlite_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-folder' / 'state.db'}"
    messages = _raises_exactly(DatabaseNotFoundError, url)
    assert all("no-such-folder" in m and "cannot be opened or created" in m for m in messages)


@pytest.fixture
def password_role(postgres: PostgresHandle) -> Iterator[str]:
    """A URL for the one role the test server asks for a password (the right one)."""
    if postgres.server is None:
        pytest.skip("needs the local test server's pg_hba.conf (not TEST_DATABASE_URL)")
    engine = create_engine(postgres.url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP ROLE IF EXISTS {PASSWORD_ROLE}"))
        conn.execute(text(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD 'right-one'"))
    try:
        url = make_url(postgres.url).set(username=PASSWORD_ROLE, password="right-one")
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {PASSWORD_ROLE}"))
        engine.dispose()


@pytest.mark.postgres
def test_a_wrong_password(password_role: str) -> None:
    right = create_engine(password_role)
    with right.connect() as conn:  # the role itself works: only the password is wrong
        assert conn.execute(text("SELECT current_user")).scalar() == PASSWORD_ROLE
    right.dispose()
    wrong = make_url(password_role).set(password=SECRET).render_as_string(hide_password=False)
    messages = _raises_exactly(CredentialsRejectedError, wrong)
    assert all("password authentication failed" in m for m in messages)
    shown = cli("list", "--url", wrong)
    assert shown.returncode == 3 and "refused the credentials" in shown.stderr
    assert SECRET not in shown.stdout + shown.stderr


@pytest.mark.postgres
def test_an_unknown_user_and_a_missing_database(postgres: PostgresHandle) -> None:
    url = make_url(postgres.url)
    nobody = url.set(username="no_such_role_here").render_as_string(hide_password=False)
    _raises_exactly(CredentialsRejectedError, nobody)
    nowhere = url.set(database="no_such_database_here").render_as_string(hide_password=False)
    messages = _raises_exactly(DatabaseNotFoundError, nowhere)
    assert all('database "no_such_database_here" does not exist' in m for m in messages)
    shown = cli("stats", "--url", nowhere)
    assert shown.returncode == 3 and "no such database" in shown.stderr


def test_they_are_what_the_readme_names() -> None:
    for kind in (CredentialsRejectedError, DatabaseNotFoundError):
        assert issubclass(kind, StoreUnavailableError)
    errors: Any = __import__("sqlalchemy_awaitly")
    assert {"CredentialsRejectedError", "DatabaseNotFoundError"} <= set(errors.__all__)
