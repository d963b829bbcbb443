"""``step.all``, ``step.map`` and ``step.race``: stored as awaitly 1.35 stores them,
on every store and both runners, and a keyed group resumed after a crash runs only
the members that had not finished.

The stored outcomes below are awaitly's own, captured from its ``durable.run`` (a
keyed ``all`` and ``map`` as one step; a failed ``map`` as a failure with origin
``result``; ``race`` and groups without a key never).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from durable_harness import Env, Form

from sqlalchemy_awaitly.durable import (
    DurableEvent,
    DurableUsageError,
    Err,
    MemoryStore,
    Ok,
    UnexpectedError,
)

BOUND = 10.0  # every wait in these tests: a bug fails the test instead of hanging it
UNDEFINED_CAUSE = {
    "type": "thrown",
    "originalType": "undefined",
    "stringRepresentation": "undefined",
}


def stop() -> Any:
    return Err("STOP")  # a later failing step keeps the run's row to look at


def row(env: Env, workflow_id: str) -> dict[str, Any]:
    raw = env.row(workflow_id)
    assert raw is not None
    return dict(json.loads(raw))


class Counted:
    """A member: counts its calls (threads and tasks alike) and answers ``answer``."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            self.calls += 1
        return self.answer


def test_a_keyed_all_is_one_step_stored_as_awaitly_stores_it(durable_env: Env) -> None:
    a, b = Counted(Ok(1)), Counted("two")

    def body(deps: Any) -> Any:
        both = yield Form("all", {"a": a, "b": b}, key="both")
        assert both == {"a": 1, "b": "two"}
        listed = yield Form("all", [lambda: 1, lambda: Ok([2])], key="arr")
        assert listed == [1, [2]]
        yield "stop", stop

    assert durable_env.run(body, id="wf-all") == Err("STOP")
    stored = row(durable_env, "wf-all")
    assert stored["steps"]["both"] == {"ok": True, "value": {"a": 1, "b": "two"}}
    assert stored["steps"]["arr"] == {"ok": True, "value": [1, [2]]}
    assert "sqlalchemyAwaitly" not in stored["metadata"]  # the members' record went with it
    durable_env.run(body, id="wf-all")
    assert (a.calls, b.calls) == (1, 1)  # replayed, not run again


def test_map_runs_each_item_in_order_at_most_concurrency_at_a_time(durable_env: Env) -> None:
    running, most = [0], [0]
    lock = threading.Lock()
    is_async = durable_env.flavour == "async"

    def enter() -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])

    def leave() -> None:
        with lock:
            running[0] -= 1

    def times_ten(x: int) -> Any:
        if not is_async:
            enter()
            time.sleep(0.01)
            leave()
            return x * 10

        async def later() -> int:
            enter()
            await asyncio.sleep(0.01)
            leave()
            return x * 10

        return later()

    def body(deps: Any) -> Any:
        tens = yield Form("map", range(6), times_ten, key="tens", concurrency=2)
        assert tens == [0, 10, 20, 30, 40, 50]
        yield "stop", stop

    assert durable_env.run(body, id="wf-map") == Err("STOP")
    assert row(durable_env, "wf-map")["steps"]["tens"] == {
        "ok": True,
        "value": [0, 10, 20, 30, 40, 50],
    }
    assert most[0] == 2


def test_a_failed_map_is_stored_as_awaitly_stores_it(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        yield Form("map", [1, 2, 3], lambda x: Err({"type": "TWO"}) if x == 2 else x, key="m")

    assert durable_env.run(body, id="wf-map-err") == Err({"type": "TWO"})
    assert row(durable_env, "wf-map-err")["steps"]["m"] == {
        "ok": False,
        "error": {"type": "TWO"},
        "cause": UNDEFINED_CAUSE,
        "meta": {"origin": "result"},
    }


def test_a_failed_all_is_stored_as_a_failed_map_is(durable_env: Env) -> None:
    # awaitly stores nothing for it (a rerun runs the group again) while the run
    # reports the failure; stored, the run is failed in the run-state model too.
    def body(deps: Any) -> Any:
        yield Form("all", {"a": lambda: 1, "b": lambda: Err({"type": "B"})}, key="both")

    assert durable_env.run(body, id="wf-all-err") == Err({"type": "B"})
    stored = row(durable_env, "wf-all-err")["steps"]["both"]
    assert stored["error"] == {"type": "B"} and stored["meta"] == {"origin": "result"}
    assert durable_env.run(body, id="wf-all-err") == Err({"type": "B"})  # replayed


def test_a_member_that_raises_fails_the_group_as_a_raising_step_does(durable_env: Env) -> None:
    def broken() -> Any:
        raise ValueError("no")

    def body(deps: Any) -> Any:
        yield Form("all", [lambda: 1, broken], key="g")

    result = durable_env.run(body, id="wf-raise")
    assert isinstance(result, Err) and isinstance(result.error, UnexpectedError)
    assert isinstance(result.cause, ValueError)
    stored = row(durable_env, "wf-raise")["steps"]["g"]
    assert stored["meta"] == {"origin": "throw"}
    assert stored["error"]["_tag"] == "UnexpectedError"
    assert stored["cause"]["name"] == "ValueError"


def test_without_a_key_nothing_is_stored_and_a_rerun_runs_every_member(durable_env: Env) -> None:
    a = Counted(1)

    def body(deps: Any) -> Any:
        got = yield Form("all", {"a": a})
        mapped = yield Form("map", [1], lambda x: x + 1)
        assert (got, mapped) == ({"a": 1}, [2])
        yield "stop", stop

    durable_env.run(body, id="wf-nokey")
    durable_env.run(body, id="wf-nokey")
    assert set(row(durable_env, "wf-nokey")["steps"]) == {"stop"}
    assert a.calls == 2


def test_a_group_without_a_key_that_fails_ends_the_run_and_stores_nothing(
    durable_env: Env,
) -> None:
    def body(deps: Any) -> Any:
        yield "first", lambda: 1
        yield Form("all", [lambda: Err("NOPE")])

    assert durable_env.run(body, id="wf-nokey-err") == Err("NOPE")
    assert set(row(durable_env, "wf-nokey-err")["steps"]) == {"first"}


def test_a_race_is_won_by_the_first_to_end_and_never_stored(durable_env: Env) -> None:
    release = threading.Event()
    loser_ended: list[str] = []

    if durable_env.flavour == "async":

        async def slow() -> str:
            try:
                await asyncio.sleep(BOUND)
            except asyncio.CancelledError:
                loser_ended.append("cancelled")
                raise
            return "slow"

        async def fast() -> str:
            return "fast"

    else:

        def slow() -> str:
            release.wait(BOUND)
            loser_ended.append("finished")
            return "slow"

        def fast() -> str:
            return "fast"

    def body(deps: Any) -> Any:
        won = yield Form("race", [slow, fast], name="quickest")
        assert won == "fast"
        yield "stop", stop

    events: list[DurableEvent] = []
    assert durable_env.run(body, id="wf-race", on_event=events.append) == Err("STOP")
    assert set(row(durable_env, "wf-race")["steps"]) == {"stop"}
    assert [e.step_name for e in events if e.type == "step_success"] == ["quickest"]
    if durable_env.flavour == "async":
        assert loser_ended == ["cancelled"]  # cancelled before the run went on
    else:
        release.set()  # the loser was left running, unwatched: it ends on its own
        deadline = time.monotonic() + BOUND
        while not loser_ended and time.monotonic() < deadline:
            time.sleep(0.01)
        assert loser_ended == ["finished"]


def test_a_race_lost_to_a_failure_fails_the_run(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        yield Form("race", {"err": lambda: Err({"type": "FAST_ERR"})})

    assert durable_env.run(body, id="wf-race-err") == Err({"type": "FAST_ERR"})


class Crash(BaseException):
    """The process dying mid-group: nothing after it runs but the run's own cleanup."""


def waits_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + BOUND
    while not predicate():
        assert time.monotonic() < deadline, "waited too long"
        time.sleep(0.005)


def members_in(raw: str | None, key: str) -> dict[str, Any]:
    section = json.loads(raw)["metadata"].get("sqlalchemyAwaitly", {}) if raw else {}
    return dict(section.get("groups", {}).get(key, {}))


def recorded_members(env: Env, workflow_id: str, key: str) -> dict[str, Any]:
    return members_in(env.row(workflow_id), key)


def test_a_keyed_group_resumed_after_a_crash_runs_only_unfinished_members(
    durable_env: Env,
) -> None:
    done_first, crashing = Counted("A"), [True]
    later = Counted("B")
    state_key = "workflow:state:wf-crash"

    def second() -> Any:
        if crashing[0]:  # dies once the first member's ending is in the row
            waits_until(lambda: recorded_members(durable_env, "wf-crash", "g") == {"a": "A"})
            raise Crash()
        return later()

    async def second_async() -> Any:  # the same, waiting without blocking the loop
        store = durable_env.store
        deadline = time.monotonic() + BOUND
        while crashing[0]:
            if isinstance(store, MemoryStore):
                raw = store.get(state_key)
            else:
                raw = await store.get(state_key)
            if members_in(raw, "g") == {"a": "A"}:
                raise Crash()
            assert time.monotonic() < deadline, "waited too long"
            await asyncio.sleep(0.005)
        return later()

    member = second if durable_env.flavour == "sync" else second_async

    def body(deps: Any) -> Any:
        got = yield Form("all", {"a": done_first, "b": member}, key="g")
        assert got == {"a": "A", "b": "B"}
        yield "stop", stop

    with pytest.raises(Crash):
        durable_env.run(body, id="wf-crash")
    assert "g" not in row(durable_env, "wf-crash")["steps"]
    crashing[0] = False
    assert durable_env.run(body, id="wf-crash") == Err("STOP")
    assert (done_first.calls, later.calls) == (1, 1)  # the first was not run again
    stored = row(durable_env, "wf-crash")
    assert stored["steps"]["g"] == {"ok": True, "value": {"a": "A", "b": "B"}}
    assert recorded_members(durable_env, "wf-crash", "g") == {}


def test_a_malformed_member_record_is_ignored(durable_env: Env) -> None:
    a = Counted(1)

    def body(deps: Any) -> Any:
        yield Form("all", {"a": a}, key="g")
        yield "stop", stop

    durable_env.run(body, id="wf-bad-record")
    stored = row(durable_env, "wf-bad-record")
    del stored["steps"]["g"]
    stored["metadata"]["sqlalchemyAwaitly"] = {"groups": {"g": ["not", "a", "record"]}}
    durable_env.kv.set("workflow:state:wf-bad-record", json.dumps(stored))
    durable_env.run(body, id="wf-bad-record")
    assert a.calls == 2  # run in full, as awaitly would


@pytest.mark.parametrize(
    ("form", "args", "options"),
    [
        ("all", ("not members",), {}),
        ("all", ({"a": "not callable"},), {}),
        ("all", ({"": lambda: 1},), {}),
        ("all", ([lambda: 1],), {"concurrency": 0}),
        ("all", ([lambda: 1],), {"key": ""}),
        ("map", (5, lambda x: x), {}),
        ("map", ([1], "not callable"), {}),
        ("race", ([],), {}),
    ],
)
def test_a_bad_group_is_a_usage_error_of_the_run(
    durable_env: Env, form: str, args: tuple[Any, ...], options: dict[str, Any]
) -> None:
    def body(deps: Any) -> Any:
        yield Form(form, *args, **options)

    with pytest.raises(DurableUsageError):
        durable_env.run(body, id="wf-bad-group")


def test_a_member_value_json_cannot_hold_is_a_usage_error(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        yield Form("all", {"a": lambda: {1, 2}}, key="g")

    with pytest.raises(DurableUsageError, match=r"member 'a'|the value of step 'g'"):
        durable_env.run(body, id="wf-bad-value")


def test_members_of_an_async_run_may_be_sync_or_async() -> None:
    from sqlalchemy_awaitly import durable

    async def doubled(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    async def wf(step: Any, deps: Any) -> Any:
        return await step.all({"sync": lambda: 1, "async": lambda: doubled(2)}, key="g")

    result = asyncio.run(durable.run_async(None, wf, id="wf-mixed", store=MemoryStore()))
    assert result == Ok({"sync": 1, "async": 4})
