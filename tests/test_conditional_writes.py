"""add, touch and delete(if_value=): the conditional writes leases are made of.

On PostgreSQL and SQLite, sync and asyncio. Expiry is by the database clock,
so an expired holder loses the key to the next ``add``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import drop_table
from sqlalchemy import create_engine, text
from store_kinds import with_driver

from sqlalchemy_awaitly import InvalidInputError, SQLAlchemyKeyValueStore

TTL_SLEEP = 1.2
WAIT = 10.0  # a bound on every wait: a bug fails the test instead of hanging it


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


def test_add_and_get_takes_the_key_and_reads_the_other(store: Any) -> None:
    store.set("state:p", "saved")
    assert store.add_and_get("lock:p", "owner-1", 60, other_key="state:p") == (True, "saved")
    assert store.add_and_get("lock:p", "owner-2", 60, other_key="state:p") == (False, "saved")
    assert store.get("lock:p") == "owner-1"
    # Sent again (a lost reply): the key holds the same value, so it is still True.
    assert store.add_and_get("lock:p", "owner-1", 60, other_key="state:p") == (True, "saved")
    assert store.add_and_get("lock:q", "owner-1", 60, other_key="state:q") == (True, None)
    store.set("lock:t", "owner-1", ttl=0.5)
    store.set("state:t", "old", ttl=0.5)
    time.sleep(TTL_SLEEP)  # both expired: the key is taken over, the other reads as absent
    assert store.add_and_get("lock:t", "owner-2", 60, other_key="state:t") == (True, None)


def test_add_and_get_refuses_bad_input_and_writes_nothing(store: Any) -> None:
    with pytest.raises(InvalidInputError, match="other than the one it adds"):
        store.add_and_get("k", "v", other_key="k")
    with pytest.raises(InvalidInputError):
        store.add_and_get("k", "v", other_key="bad\x00")
    with pytest.raises(TypeError):
        store.add_and_get("k", 3, other_key="o")
    assert store.keys("*") == []


def _waiting_for_a_lock(url: str, deadline: float) -> None:
    engine = create_engine(url)
    try:
        while True:
            with engine.connect() as conn:
                waiting = conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                ).scalar_one()
            if waiting:
                return
            assert time.monotonic() < deadline, "add_and_get never waited for the lease row"
            time.sleep(0.01)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("driver", "options"),
    [
        ("psycopg", {}),  # by name, two EXECUTEs in one message
        ("psycopg", {"prepare_threshold": None}),  # two statements, client-side binding
        ("psycopg2", {}),
        ("psycopg", {"statement_timeout": 10}),
    ],
)
def test_add_and_get_reads_what_the_last_holder_committed_while_it_waited(
    postgres: Any, table_name: str, driver: str, options: dict[str, Any]
) -> None:
    """A stale holder's checkpoint share-locks the expired lease row until it commits: the
    new holder's add waits for it, and must then read that checkpoint. One statement
    could not (its snapshot is older than the wait): the control below shows it."""
    url = with_driver(postgres.url, driver)
    table = table_name
    try:
        with SQLAlchemyKeyValueStore(url, table_name=table, **options) as store:
            store.set("lock:w", "old-owner", ttl=60)
            engine = create_engine(postgres.url)
            for take in ("add_and_get", "one statement"):
                with engine.begin() as conn:  # the old holder's lease has expired
                    conn.execute(
                        text(
                            f"UPDATE {table} SET value = 'old-owner', "
                            "expires_at = now() - interval '1 hour' WHERE key = 'lock:w'"
                        )
                    )
                    conn.execute(text(f"DELETE FROM {table} WHERE key = 'state:w'"))
                stale = engine.connect()
                tx = stale.begin()
                stale.execute(text(f"SELECT 1 FROM {table} WHERE key = 'lock:w' FOR SHARE"))
                stale.execute(
                    text(f"INSERT INTO {table} (key, value) VALUES ('state:w', 'checkpoint')")
                )
                with ThreadPoolExecutor(1) as pool:
                    if take == "add_and_get":
                        answer = pool.submit(
                            store.add_and_get, "lock:w", f"new-{take}", 60, other_key="state:w"
                        )
                    else:
                        answer = pool.submit(_one_statement, postgres.url, table)
                    _waiting_for_a_lock(postgres.url, time.monotonic() + WAIT)
                    tx.commit()
                    stale.close()
                    got = answer.result(timeout=WAIT)
                if take == "add_and_get":
                    assert got == (True, "checkpoint")
                else:
                    assert got == (True, None)  # took the lease, missed the checkpoint
            engine.dispose()
    finally:
        drop_table(create_engine(postgres.url), table)


def _one_statement(url: str, table: str) -> tuple[bool, str | None]:
    """The lease taken and the row read in a single statement: the design not taken."""
    sql = text(
        f"WITH taken AS (INSERT INTO {table} (key, value) VALUES ('lock:w', 'new') "
        f"ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = NULL "
        f"WHERE {table}.expires_at <= now() RETURNING 1) "
        f"SELECT (SELECT count(*) FROM taken) = 1, "
        f"(SELECT value FROM {table} WHERE key = 'state:w')"
    )
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            taken, value = conn.execute(sql).one()
        return bool(taken), value
    finally:
        engine.dispose()
