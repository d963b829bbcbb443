"""The captured awaitly 1.35 store calls: Python writes the same rows, and resumes them.

Every fixture in ``tests/fixtures/awaitly-1.35/`` is a list of the
``save``/``delete`` calls awaitly's ``durable.run`` made. Python, running the
same workflow, must make the same calls with the same documents (timestamps
and stack traces aside); and from each saved snapshot (a crash at that point)
a Python run must resume as awaitly would.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import AWAITLY_FIXTURES

from sqlalchemy_awaitly import durable
from sqlalchemy_awaitly.durable import Err, MemoryStore, Ok, UnexpectedError

FIXTURES = AWAITLY_FIXTURES
PREFIX = "workflow:state:"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def calls_of(name: str) -> list[dict[str, Any]]:
    return json.loads((FIXTURES / f"{name}.json").read_text())["store_calls"]


class RecordingStore(MemoryStore):
    """A memory store that notes each write under the state prefix, as the fixtures do."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, Any]] = []

    def _saved(self, key: str, value: str) -> None:
        if key.startswith(PREFIX):
            self.calls.append(
                {"op": "save", "id": key[len(PREFIX) :], "snapshot": json.loads(value)}
            )

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self._saved(key, value)
        super().set(key, value, ttl)

    def add(self, key: str, value: str, ttl: float | None = None) -> bool:
        added = super().add(key, value, ttl)
        if added:
            self._saved(key, value)
        return added

    def set_guarded(self, key: str, value: str, ttl: float | None = None, **guard: str) -> bool:
        done = super().set_guarded(key, value, ttl, **guard)
        if done:
            self._saved(key, value)
        return done

    def delete_guarded(self, key: str, **guard: Any) -> bool:
        if key.startswith(PREFIX):
            self.calls.append({"op": "delete", "id": key[len(PREFIX) :]})
        return super().delete_guarded(key, **guard)

    def delete(self, key: str, *, if_value: str | None = None) -> bool:
        if key.startswith(PREFIX) and if_value is None:
            self.calls.append({"op": "delete", "id": key[len(PREFIX) :]})
        return super().delete(key, if_value=if_value)


def _final_workflow(name: str) -> tuple[str, dict[str, Any]]:
    saves = [c for c in calls_of(name) if c["op"] == "save" and not c["id"].startswith("idem:")]
    return saves[-1]["id"], saves[-1]["snapshot"]


def _steps_as_python(snapshot: dict[str, Any], ran: list[str]) -> Any:
    """A Python workflow whose steps give exactly the outcomes stored in ``snapshot``."""
    outcomes = list(snapshot["steps"].items())

    def run_step(key: str, outcome: dict[str, Any]) -> Any:
        def fn() -> Any:
            ran.append(key)
            if outcome["ok"]:
                return outcome.get("value")
            if outcome["meta"]["origin"] == "throw":
                raise RuntimeError(outcome["cause"].get("message", "thrown"))
            return Err(outcome["error"])

        return fn

    def workflow(step: Any, deps: Any) -> Any:
        last = None
        for key, outcome in outcomes:
            last = step(run_step(key, outcome), key=key)
        return last

    return workflow


def _normalised(call: dict[str, Any]) -> dict[str, Any]:
    call = json.loads(json.dumps(call))
    snapshot = call.get("snapshot")
    if snapshot:
        for field in ("lastUpdated", "completedAt"):
            if field in snapshot["execution"]:
                snapshot["execution"][field] = "<time>"
        # Python's claim marker alone carries a unique token, so that a claim
        # whose reply was lost can be recognised (awaitly keeps unknown keys).
        snapshot.get("metadata", {}).pop("claimToken", None)
        # And Python's snapshots say how long each step took (``show`` prints it).
        took = snapshot.get("metadata", {}).pop("sqlalchemyAwaitlyStepMs", None)
        assert took is None or all(isinstance(ms, int) for ms in took)
    return call


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("thrown")])
def test_python_makes_the_same_store_calls(name: str) -> None:
    workflow_id, final = _final_workflow(name)
    options: dict[str, Any] = {}
    meta = {k: v for k, v in final["metadata"].items() if k not in ("version", "lastStepKey")}
    if meta:
        options["metadata"] = meta
    if "version" in final["metadata"]:
        options["version"] = final["metadata"]["version"]
    idem = [c for c in calls_of(name) if c["id"].startswith("idem:")]
    if idem:
        record = idem[0]["snapshot"]["metadata"]
        options.update(idempotency_key=record["idempotencyKey"], input=record.get("input"))
    store = RecordingStore()
    durable.run(None, _steps_as_python(final, []), id=workflow_id, store=store, **options)
    assert [_normalised(c) for c in store.calls] == [_normalised(c) for c in calls_of(name)]


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("thrown")])
def test_python_records_a_raised_step_in_awaitly_s_shape(name: str) -> None:
    workflow_id, final = _final_workflow(name)
    store = RecordingStore()
    durable.run(None, _steps_as_python(final, []), id=workflow_id, store=store)
    ours = store.calls[-1]["snapshot"]
    theirs = final
    assert list(ours) == list(theirs)
    for key, outcome in theirs["steps"].items():
        mine = ours["steps"][key]
        assert mine["ok"] is False and mine["meta"] == outcome["meta"] == {"origin": "throw"}
        for field in ("_tag", "name", "code", "hint", "docsUrl"):
            assert mine["error"][field] == outcome["error"][field]
        assert mine["cause"]["type"] == "error"


def _crash_points(name: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (c["id"], c["snapshot"])
        for c in calls_of(name)
        if c["op"] == "save" and not c["id"].startswith("idem:")
    ]


@pytest.mark.parametrize("name", NAMES)
def test_every_saved_snapshot_resumes_as_awaitly_would(name: str) -> None:
    workflow_id, final = _final_workflow(name)
    for at, (_, saved) in enumerate(_crash_points(name)):
        store = MemoryStore()
        store.set(PREFIX + workflow_id, json.dumps(saved))
        ran: list[str] = []
        version = saved["metadata"].get("version", 1)
        result = durable.run(
            None, _steps_as_python(final, ran), id=workflow_id, store=store, version=version
        )
        stored = list(saved["steps"])
        assert not set(ran) & set(stored), f"crash point {at}: a stored step ran again"
        failure = next((k for k, o in saved["steps"].items() if not o["ok"]), None)
        if failure is not None:
            outcome = saved["steps"][failure]
            assert isinstance(result, Err), at
            if outcome["meta"]["origin"] == "throw":
                assert isinstance(result.error, UnexpectedError)
            else:
                assert result.error == outcome["error"]
            assert ran == []
            assert store.get(PREFIX + workflow_id) is not None  # a failed run keeps its row
        else:
            assert ran == [k for k in final["steps"] if k not in stored]
            fails = any(not o["ok"] for o in final["steps"].values())
            assert isinstance(result, Err if fails else Ok), at
            assert (store.get(PREFIX + workflow_id) is None) is not fails


def test_the_incrementally_encoded_snapshot_is_the_plain_json_text() -> None:
    from sqlalchemy_awaitly.wire.documents import EncodedSteps, to_json, workflow_snapshot

    outcomes = {
        "fetch-user": {"ok": True, "value": {"id": "123", "name": "Ålice ✓ \x00"}},
        "日本": {"ok": True, "value": [1, 2.5, None, True]},
        'quote"key': {"ok": False, "error": "X", "cause": {"type": "thrown"}, "meta": {}},
    }
    encoded = EncodedSteps()
    for key, outcome in outcomes.items():
        encoded.put(key, outcome)
    encoded.put("dropped", {"ok": True, "value": 0})
    encoded.drop("dropped")
    text = workflow_snapshot("wf", encoded, 'quote"key', {"version": 2, "tenant": "acme"})
    document = json.loads(text)
    assert text == to_json(
        {
            "formatVersion": 1,
            "workflowName": "wf",
            "steps": outcomes,
            "execution": document["execution"],
            "metadata": {"version": 2, "tenant": "acme", "lastStepKey": 'quote"key'},
        }
    )


def test_a_runs_snapshot_writer_encodes_unchanged_parts_once_and_never_serves_stale_ones() -> None:
    from sqlalchemy_awaitly.wire.documents import EncodedSteps, SnapshotWriter, to_json

    steps = EncodedSteps()
    writer = SnapshotWriter("wf", steps)
    steps.put("a", {"ok": True, "value": 1})
    plain = {"version": 1}
    first = json.loads(writer.text("a", plain))
    assert first["metadata"] == {"version": 1, "lastStepKey": "a"}
    steps.put("b", {"ok": True, "value": 2})
    waiting = {"version": 1, "sqlalchemyAwaitly": {"waits": {"c": {"until": 5}}}}
    second = writer.text("b", waiting)  # a new dict: encoded anew
    assert json.loads(second)["metadata"] == {**waiting, "lastStepKey": "b"}
    third = json.loads(writer.text("b", plain))  # the first dict again: its own text
    assert third["metadata"] == {"version": 1, "lastStepKey": "b"}
    assert third["steps"] == {"a": {"ok": True, "value": 1}, "b": {"ok": True, "value": 2}}
    assert writer.text("b", plain).startswith('{"formatVersion":1,"workflowName":' + to_json("wf"))


def test_a_run_stamps_each_snapshot_with_the_current_millisecond() -> None:
    import re
    import time
    from datetime import datetime, timezone

    from sqlalchemy_awaitly.wire.documents import now_iso

    before = datetime.now(timezone.utc).replace(microsecond=0)
    first = now_iso()
    stamps = {first}
    deadline = time.monotonic() + 5  # a new millisecond must give a new text, soon
    while len(stamps) == 1 and time.monotonic() < deadline:
        stamps.add(now_iso())
    after = datetime.now(timezone.utc)
    assert len(stamps) >= 2
    for stamp in stamps:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert before <= moment <= after
