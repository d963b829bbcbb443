"""add, touch and delete(if_value=): the conditional writes leases are made of.

On PostgreSQL and SQLite, sync and asyncio. Expiry is by the database clock,
so an expired holder loses the key to the next ``add``.
"""

from __future__ import annotations

import time
from typing import Any

from conftest import drop_table
from sqlalchemy import create_engine

TTL_SLEEP = 1.2


def test_add_stores_only_when_no_live_row_holds_the_key(store: Any) -> None:
    assert store.add("lock:a", "owner-1", ttl=60)
    assert not store.add("lock:a", "owner-2", ttl=60)
    assert store.get("lock:a") == "owner-1"
    store.set("plain", "v")
    assert not store.add("plain", "other")
    assert store.get("plain") == "v"


def test_add_takes_over_an_expired_row(store: Any) -> None:
    assert store.add("lock:b", "owner-1", ttl=0.5)
    time.sleep(TTL_SLEEP)
    assert store.add("lock:b", "owner-2", ttl=60)
    assert store.get("lock:b") == "owner-2"


def test_touch_extends_only_a_live_row_holding_the_value(store: Any) -> None:
    store.add("lock:c", "owner-1", ttl=1)
    assert not store.touch("lock:c", 60, if_value="owner-2")
    assert store.touch("lock:c", 60, if_value="owner-1")
    time.sleep(TTL_SLEEP)
    assert store.get("lock:c") == "owner-1"  # extended past its first second
    assert store.touch("lock:c", None)  # never expires now
    assert not store.touch("missing", 60)


def test_touch_fails_once_the_row_has_expired(store: Any) -> None:
    store.add("lock:d", "owner-1", ttl=0.5)
    time.sleep(TTL_SLEEP)
    assert not store.touch("lock:d", 60, if_value="owner-1")


def test_delete_if_value_removes_only_the_holders_row(store: Any) -> None:
    store.add("lock:e", "owner-1", ttl=60)
    assert not store.delete("lock:e", if_value="owner-2")
    assert store.get("lock:e") == "owner-1"
    assert store.delete("lock:e", if_value="owner-1")
    assert store.get("lock:e") is None


def test_concurrent_adds_have_exactly_one_winner(postgres: Any, table_name: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy_awaitly import SQLAlchemyKeyValueStore

    with (
        SQLAlchemyKeyValueStore(
            postgres.url, table_name=table_name, pool={"pool_size": 8}
        ) as store,
        ThreadPoolExecutor(8) as pool,
    ):
        store.setup()
        for round_ in range(20):
            key = f"lock:{round_}"
            wins = list(pool.map(lambda i, k=key: store.add(k, f"owner-{i}", ttl=60), range(8)))
            assert wins.count(True) == 1
            assert store.get(key) == f"owner-{wins.index(True)}"
    engine = create_engine(postgres.url)
    drop_table(engine, table_name)
    engine.dispose()


def test_guarded_writes_happen_only_while_the_lease_is_held(store: Any) -> None:
    store.add("lock:g", "owner-1", ttl=60)
    assert store.set_guarded("state:g", "v1", guard_key="lock:g", guard_value="owner-1")
    assert store.get("state:g") == "v1"
    assert not store.set_guarded("state:g", "v2", guard_key="lock:g", guard_value="owner-2")
    assert not store.delete_guarded("state:g", guard_key="lock:g", guard_value="owner-2")
    assert store.get("state:g") == "v1"
    assert store.delete_guarded("state:g", guard_key="lock:g", guard_value="owner-1")
    assert store.get("state:g") is None
    store.add("lock:h", "owner-1", ttl=0.5)
    store.set("state:h2", "v")
    time.sleep(TTL_SLEEP)  # the lease expired: its old owner writes nothing
    assert not store.set_guarded("state:h", "v", guard_key="lock:h", guard_value="owner-1")
    assert store.get("state:h") is None
    gone = store.delete_guarded("state:h2", guard_key="lock:h", guard_value="owner-1", release=True)
    assert not gone and store.get("state:h2") == "v"


def test_a_guarded_delete_with_release_takes_the_row_and_its_lease_together(store: Any) -> None:
    store.add("lock:r", "owner-1", ttl=60)
    assert store.set_guarded("state:r", "v", guard_key="lock:r", guard_value="owner-1")
    store.set("other", "x")
    stale = {"guard_key": "lock:r", "guard_value": "owner-2"}
    assert not store.delete_guarded("state:r", **stale, release=True)
    assert store.get("state:r") == "v" and store.get("lock:r") == "owner-1"
    held = {"guard_key": "lock:r", "guard_value": "owner-1"}
    assert store.delete_guarded("state:r", **held, release=True)
    assert store.get("state:r") is None and store.get("lock:r") is None
    assert store.get("other") == "x"
    # No row to delete (a run that recorded nothing): the lease goes, and it held.
    store.add("lock:s", "owner-1", ttl=60)
    assert store.delete_guarded("state:s", guard_key="lock:s", guard_value="owner-1", release=True)
    assert store.get("lock:s") is None
