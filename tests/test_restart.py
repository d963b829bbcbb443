"""An engine the store built survives a database restart; a down server errors fast."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest
from conftest import PoolWatch
from postgres_server import LocalPostgres, find_bindir

from sqlalchemy_awaitly import (
    AsyncSQLAlchemyKeyValueStore,
    SQLAlchemyKeyValueStore,
    StoreUnavailableError,
)


@pytest.fixture(scope="module")
def own_server() -> Iterator[LocalPostgres]:
    """A server of this module's own, since the test stops and restarts it."""
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs the local PostgreSQL binaries for the restart test")
        pytest.skip("no local PostgreSQL binaries to restart")
    server = LocalPostgres(bindir)
    server.start()
    yield server
    server.cleanup()


def test_sync_store_survives_restart(own_server: LocalPostgres) -> None:
    store = SQLAlchemyKeyValueStore(own_server.url, pool={"pool_size": 4, "max_overflow": 0})
    watch = PoolWatch(store.engine)
    with store:
        store.set("k", "before")
        held = [store.engine.raw_connection() for _ in range(4)]
        for fairy in held:
            fairy.close()  # four pooled connections, all from before the restart
        own_server.stop()
        own_server.start()
        # Every pooled connection died with the old server: no call in between
        # noticed, yet every call after the restart succeeds, even those a
        # repeat could not make safe (add), since none is sent to a dead one.
        for i in range(8):
            assert store.add(f"after:{i}", "v") is True
        assert store.get("k") == "before"
        own_server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="could not be reached"):
            store.get("k")
        assert time.monotonic() - started < 15
        own_server.start()
        assert store.get("k") == "before"
        store.set("k", "after")
        assert store.get("k") == "after"
    assert not watch.out


def test_async_store_survives_restart(own_server: LocalPostgres) -> None:
    async def scenario() -> None:
        async with AsyncSQLAlchemyKeyValueStore(own_server.url) as store:
            await store.set("a", "before")
            own_server.stop()
            own_server.start()
            assert await store.get("a") == "before"
            own_server.stop()
            with pytest.raises(StoreUnavailableError):
                await store.get("a")
            own_server.start()
            assert await store.get("a") == "before"

    asyncio.run(scenario())
