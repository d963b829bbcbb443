"""The key/value contract, on PostgreSQL and SQLite, sync and asyncio."""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import Any

import pytest

from sqlalchemy_awaitly import InvalidInputError
from sqlalchemy_awaitly.validation import MAX_KEY_BYTES

TTL_SLEEP = 1.2


def test_set_get_overwrite_and_missing(store: Any) -> None:
    assert store.get("k") is None
    store.set("k", "v1")
    assert store.get("k") == "v1"
    store.set("k", "v2")
    assert store.get("k") == "v2"


def test_values_keep_every_character(store: Any) -> None:
    value = "héllo ✓ 日本 \\ % _ ' \" \n\t" + "x" * 100_000
    store.set("unicode:✓", value)
    assert store.get("unicode:✓") == value


def test_delete_reports_whether_a_row_went(store: Any) -> None:
    store.set("k", "v")
    assert store.delete("k") is True
    assert store.delete("k") is False
    assert store.get("k") is None


def test_exists(store: Any) -> None:
    assert store.exists("k") is False
    store.set("k", "")
    assert store.exists("k") is True


def test_ttl_hides_expired_rows_from_every_read(store: Any) -> None:
    store.set("short", "s", ttl=0.5)
    store.set("long", "l", ttl=3600)
    store.set("forever", "f")
    assert store.get("short") == "s"
    time.sleep(TTL_SLEEP)
    assert store.get("short") is None
    assert store.exists("short") is False
    assert store.keys("*") == ["forever", "long"]
    assert store.get_many(["short", "long"]) == {"long": "l"}
    assert store.delete("short") is False
    assert store.stats().rows == 2


def test_ttl_takes_a_timedelta(store: Any) -> None:
    store.set("short", "s", ttl=timedelta(milliseconds=500))
    store.set_many({"long": "l"}, ttl=timedelta(hours=1))
    assert store.add("added", "a", ttl=timedelta(milliseconds=500)) is True
    time.sleep(TTL_SLEEP)
    assert store.keys("*") == ["long"]
    with pytest.raises(InvalidInputError):
        store.set("k", "v", ttl=timedelta(0))
    with pytest.raises(InvalidInputError):
        store.set("k", "v", ttl=timedelta(days=-1))


def test_set_again_without_ttl_clears_expiry(store: Any) -> None:
    store.set("k", "v", ttl=0.5)
    store.set("k", "v2")
    time.sleep(TTL_SLEEP)
    assert store.get("k") == "v2"


def test_purge_expired_deletes_in_batches(store: Any) -> None:
    store.set_many({f"e{i}": "x" for i in range(25)}, ttl=0.3)
    store.set("keep", "x", ttl=3600)
    time.sleep(TTL_SLEEP)
    assert store.stats().expired_rows == 25
    assert store.purge_expired(batch_size=10) == 25
    assert store.purge_expired(batch_size=10) == 0
    stats = store.stats()
    assert (stats.rows, stats.expired_rows) == (1, 0)


def test_stats_report_sizes_on_postgresql(make_store: Any) -> None:
    store = make_store()
    store.set("a", "b")
    stats = store.stats()
    assert stats.rows == 1
    assert stats.total_bytes and stats.total_bytes > 0
    if make_store.backend == "postgresql":
        assert stats.table_bytes and stats.index_bytes


def test_keys_patterns(store: Any) -> None:
    keys = ["workflow:state:a", "workflow:state:b", "workflow:lock:a", "other", "w%_\\x"]
    store.set_many({k: "v" for k in keys})
    assert store.keys("workflow:state:*") == ["workflow:state:a", "workflow:state:b"]
    assert store.keys("workflow:*:a") == ["workflow:lock:a", "workflow:state:a"]
    assert store.keys("other") == ["other"]
    assert store.keys("othe") == []
    assert store.keys("w%_\\*") == ["w%_\\x"]
    assert store.keys("w%*") == ["w%_\\x"]
    assert store.keys("*_*") == ["w%_\\x"]
    assert store.keys("*") == sorted(keys, key=lambda k: k.encode())
    assert store.keys_with_prefix("workflow:") == [
        "workflow:lock:a",
        "workflow:state:a",
        "workflow:state:b",
    ]


def test_keys_are_case_sensitive(store: Any) -> None:
    store.set_many({"Abc": "1", "abc": "2"})
    assert store.keys("a*") == ["abc"]
    assert store.keys("A*") == ["Abc"]


def test_batch_calls(store: Any) -> None:
    store.set_many({"a": "1", "b": "2", "c": "3"})
    store.set_many([("c", "old"), ("c", "new")])
    assert store.get_many(["a", "c", "missing", "a"]) == {"a": "1", "c": "new"}
    assert store.delete_many(["a", "b", "missing"]) == 2
    assert store.keys("*") == ["c"]
    assert store.get_many([]) == {}
    assert store.delete_many([]) == 0
    store.set_many({})


def test_batch_of_a_thousand(store: Any) -> None:
    items = {f"bulk:{i:04d}": f"value {i}" for i in range(1000)}
    store.set_many(items, ttl=3600)
    assert store.get_many(list(items)) == items
    assert len(store.keys("bulk:*")) == 1000
    assert store.delete_many(list(items)) == 1000


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.set(1, "v"), TypeError),
        (lambda s: s.set("k", b"v"), TypeError),
        (lambda s: s.set("k", None), TypeError),
        (lambda s: s.set("", "v"), InvalidInputError),
        (lambda s: s.set("k\x00", "v"), InvalidInputError),
        (lambda s: s.set("k", "v\x00"), InvalidInputError),
        (lambda s: s.set("k", "v", ttl=True), TypeError),
        (lambda s: s.set("k", "v", ttl="5"), TypeError),
        (lambda s: s.set("k", "v", ttl=0), InvalidInputError),
        (lambda s: s.set("k", "v", ttl=-1), InvalidInputError),
        (lambda s: s.set("k", "v", ttl=math.nan), InvalidInputError),
        (lambda s: s.set("k", "v", ttl=math.inf), InvalidInputError),
        (lambda s: s.set("k", "v", ttl=1e12), InvalidInputError),
        (lambda s: s.set_many({"ok": "v", "bad": 3}), TypeError),
        (lambda s: s.set_many({"ok": "v", "": "v"}), InvalidInputError),
        (lambda s: s.set_many({"ok": "v"}, ttl=False), TypeError),
        (lambda s: s.get_many("abc"), TypeError),
        (lambda s: s.get(None), TypeError),
        (lambda s: s.keys(3), TypeError),
        (lambda s: s.purge_expired(batch_size=0), InvalidInputError),
        (lambda s: s.purge_expired(batch_size=10**12), InvalidInputError),
        (lambda s: s.purge_expired(batch_size=True), TypeError),
        (lambda s: s.set("k", "v", ttl=10**400), InvalidInputError),  # no float holds it
        (lambda s: s.set("k" * (MAX_KEY_BYTES + 1), "v"), InvalidInputError),
        (lambda s: s.set("é" * (MAX_KEY_BYTES // 2 + 1), "v"), InvalidInputError),  # bytes count
        (lambda s: s.set("a\ud83d", "v"), InvalidInputError),  # a lone surrogate
        (lambda s: s.set("k", "Zoë \ud83d"), InvalidInputError),
        (lambda s: s.add("k", "\udcff"), InvalidInputError),  # os.fsdecode of a bad byte
        (lambda s: s.set_many({"ok": "v", "k": "\ud800"}), InvalidInputError),
        (lambda s: s.set_many({"ok": "v", "\udcff": "v"}), InvalidInputError),
        (lambda s: s.get("\ud83d"), InvalidInputError),
        (lambda s: s.delete_many(["ok", "\ud800"]), InvalidInputError),
        (lambda s: s.keys("\udcff*"), InvalidInputError),
        (lambda s: s.touch("k", 10, if_value="\ud800"), InvalidInputError),
    ],
)
def test_bad_input_is_rejected_and_nothing_is_written(store: Any, call: Any, error: Any) -> None:
    with pytest.raises(error):
        call(store)
    assert store.keys("*") == []


@pytest.mark.parametrize("key", ["k" * MAX_KEY_BYTES, "é" * (MAX_KEY_BYTES // 2), "😀" * 512])
def test_a_key_at_the_byte_limit_is_kept_on_every_backend(store: Any, key: str) -> None:
    assert len(key.encode()) == MAX_KEY_BYTES
    store.set(key, "v")
    assert store.get(key) == "v"
    assert store.keys("*") == [key]


@pytest.mark.parametrize("name", ["x; DROP TABLE t", "1abc", "a-b", "", "é", "a" * 64])
def test_table_name_must_be_a_plain_identifier(make_store: Any, name: str) -> None:
    with pytest.raises(InvalidInputError):
        make_store(table_name=name)


def test_schema_name_must_be_a_plain_identifier(make_store: Any) -> None:
    with pytest.raises(InvalidInputError):
        make_store(schema='public"; --')
