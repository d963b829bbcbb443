"""Workflow state documents: awaitly 1.35's snapshots, the older format, corrupt rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import AWAITLY_FIXTURES

from sqlalchemy_awaitly import (
    CorruptStateError,
    InvalidInputError,
    create_state_persistence,
)

FIXTURES = AWAITLY_FIXTURES
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))


def test_fixtures_are_there() -> None:
    assert len(FIXTURE_FILES) >= 7, f"expected awaitly fixtures in {FIXTURES}"


class Persistence:
    """Sync access to sync or async state persistence (the store fixture's view)."""

    def __init__(self, store: Any, prefix: str = "workflow:state:") -> None:
        target = getattr(store, "_target", store)
        self.inner = create_state_persistence(target, prefix)
        self.store = store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        loop = getattr(self.store, "_loop", None)
        if loop is None:
            return attr
        return lambda *a, **k: loop.run_until_complete(attr(*a, **k))


@pytest.mark.parametrize("fixture", FIXTURE_FILES, ids=lambda p: p.stem)
def test_awaitly_store_calls_replay_and_load(store: Any, fixture: Path) -> None:
    persistence = Persistence(store)
    for call in json.loads(fixture.read_text())["store_calls"]:
        if call["op"] == "save":
            persistence.save(call["id"], call["snapshot"])
            assert persistence.load(call["id"]) == call["snapshot"]
            raw = store.get("workflow:state:" + call["id"])
            assert json.loads(raw) == call["snapshot"]
        else:
            assert persistence.delete(call["id"]) is True
            assert persistence.load(call["id"]) is None


def test_save_merges_metadata_and_keeps_unknown_keys(store: Any) -> None:
    persistence = Persistence(store)
    snapshot = {
        "formatVersion": 1,
        "workflowName": "wf",
        "steps": {"a": {"ok": True, "value": 1}},
        "execution": {"status": "running"},
        "metadata": {"tenant": "acme", "version": 7},
    }
    persistence.save("wf", snapshot, {"lastStepKey": "a"})
    loaded = persistence.load("wf")
    assert loaded["metadata"] == {"tenant": "acme", "version": 7, "lastStepKey": "a"}
    assert snapshot["metadata"] == {"tenant": "acme", "version": 7}  # caller's dict untouched


def test_list_load_raw_delete_under_prefix(store: Any) -> None:
    persistence = Persistence(store, "myapp:workflow:")
    other = Persistence(store)
    doc = {"formatVersion": 1, "steps": {}, "execution": {"status": "running"}}
    for run_id in ("b", "a", "x*y"):
        persistence.save(run_id, doc)
    other.save("z", doc)
    store.set("myapp:workflowX", "not under the prefix")
    assert persistence.list() == ["a", "b", "x*y"]
    assert json.loads(persistence.load_raw("a")) == doc
    assert persistence.delete("a") is True
    assert persistence.list() == ["b", "x*y"]
    assert other.list() == ["z"]


def test_reads_the_older_serialized_state_format(store: Any) -> None:
    older = {
        "version": 1,
        "entries": {
            "fetch-user": {"result": {"ok": True, "value": {"id": "123"}}},
            "charge": {
                "result": {
                    "ok": False,
                    "error": "DECLINED",
                    "cause": {
                        "type": "error",
                        "errorName": "Error",
                        "errorMessage": "card declined",
                    },
                },
                "meta": {"origin": "result"},
            },
        },
        "metadata": {
            "version": 1,
            "lastStepKey": "charge",
            "updatedAt": "2026-01-20T10:00:00.000Z",
        },
    }
    store.set("workflow:state:old", json.dumps(older))
    loaded = Persistence(store).load("old")
    assert loaded["formatVersion"] == 1
    assert loaded["steps"]["fetch-user"] == {"ok": True, "value": {"id": "123"}}
    assert loaded["steps"]["charge"]["error"] == "DECLINED"
    assert loaded["steps"]["charge"]["cause"] == {
        "type": "error",
        "name": "Error",
        "message": "card declined",
    }
    assert loaded["execution"]["lastUpdated"] == "2026-01-20T10:00:00.000Z"


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        '"a string"',
        '{"formatVersion": 2, "steps": {}, "execution": {}}',
        '{"formatVersion": 1, "steps": [], "execution": {}}',
        '{"formatVersion": 1, "steps": {"a": {"value": 1}}, "execution": {}}',
        '{"version": 2, "entries": {}}',
        '{"hello": "world"}',
    ],
)
def test_corrupt_rows_raise_naming_the_key(store: Any, raw: str) -> None:
    store.set("workflow:state:bad", raw)
    with pytest.raises(CorruptStateError, match="workflow:state:bad"):
        Persistence(store).load("bad")


def test_snapshot_with_nul_in_a_value_is_fine(store: Any) -> None:
    doc = {
        "formatVersion": 1,
        "steps": {"u": {"ok": True, "value": "a \u0000 b"}},
        "execution": {"status": "running"},
    }
    persistence = Persistence(store)
    persistence.save("nul", doc)
    assert persistence.load("nul") == doc


@pytest.mark.parametrize(
    "state",
    [
        {"formatVersion": 1, "steps": {"a": {"ok": True, "value": float("nan")}}, "execution": {}},
        {"formatVersion": 1, "steps": {"a": {"ok": True, "value": object()}}, "execution": {}},
        {"steps": {}, "execution": {}},
    ],
)
def test_unsavable_snapshots_are_rejected(store: Any, state: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        Persistence(store).save("wf", state)
    assert store.keys("*") == []


def test_run_id_is_checked(store: Any) -> None:
    with pytest.raises(InvalidInputError):
        Persistence(store).load("")
    with pytest.raises(TypeError):
        Persistence(store).load(5)
