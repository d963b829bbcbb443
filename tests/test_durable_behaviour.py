"""The runner's behaviour (durable-semantics.md), on every store and both flavours.

Each test runs on the in-memory store, PostgreSQL and SQLite, through
``durable.run`` and ``durable.run_async`` (see ``durable_harness``).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from durable_harness import Env
from fake_clock import FakeClock

from sqlalchemy_awaitly import durable
from sqlalchemy_awaitly.durable import (
    ConcurrentExecution,
    CorruptState,
    DuplicateStepKeyError,
    DurableUsageError,
    Err,
    IdempotencyConflict,
    Migrated,
    Ok,
    ReplayedException,
    UnexpectedError,
    UnsupportedValueError,
    VersionMismatch,
)


class Calls:
    """Counts how often each step's function really ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def __call__(self, key: str, value: Any = None) -> Any:
        def fn() -> Any:
            self.ran.append(key)
            return value

        return fn


def snapshot(env: Env, workflow_id: str) -> dict[str, Any] | None:
    text = env.row(workflow_id)
    return None if text is None else json.loads(text)


def test_steps_run_once_and_success_deletes_the_row(durable_env: Env) -> None:
    calls = Calls()

    def body(deps: Any) -> Any:
        user = yield "fetch-user", calls("fetch-user", {"id": "123", "name": "Alice"})
        order = yield "create-order", calls("create-order", Ok({"id": "order-1"}))
        return {"user": user, "order": order}

    result = durable_env.run(body, id="checkout-1")
    assert result == Ok({"user": {"id": "123", "name": "Alice"}, "order": {"id": "order-1"}})
    assert calls.ran == ["fetch-user", "create-order"]
    assert durable_env.row("checkout-1") is None


def test_a_failed_step_ends_the_run_and_its_failure_is_replayed_not_retried(
    durable_env: Env,
) -> None:
    calls = Calls()

    def body(deps: Any) -> Any:
        yield "reserve", calls("reserve", True)
        yield "charge", calls("charge", Err("CARD_DECLINED"))
        yield "ship", calls("ship", "shipped")

    first = durable_env.run(body, id="checkout-2")
    assert first == Err("CARD_DECLINED", None)
    stored = snapshot(durable_env, "checkout-2")
    assert stored is not None
    assert stored["steps"]["charge"] == {
        "ok": False,
        "error": "CARD_DECLINED",
        "cause": {
            "type": "thrown",
            "originalType": "undefined",
            "stringRepresentation": "undefined",
        },
        "meta": {"origin": "result"},
    }
    assert stored["execution"]["currentStepId"] == "charge"
    second = durable_env.run(body, id="checkout-2")
    assert second == first
    assert calls.ran == ["reserve", "charge"]  # nothing ran again

    assert durable_env.helper("retry_step", "checkout-2") == ["charge"]
    calls_after = Calls()

    def fixed(deps: Any) -> Any:
        yield "reserve", calls_after("reserve", True)
        yield "charge", calls_after("charge", "paid")
        return (yield "ship", calls_after("ship", "shipped"))

    assert durable_env.run(fixed, id="checkout-2") == Ok("shipped")
    assert calls_after.ran == ["charge", "ship"]


def test_a_raised_exception_is_recorded_with_its_chain_and_replayed(durable_env: Env) -> None:
    def boom() -> Any:
        try:
            raise ValueError("inner failure")
        except ValueError as inner:
            raise RuntimeError("outer failure") from inner

    def body(deps: Any) -> Any:
        yield "call-api", boom

    first = durable_env.run(body, id="thrown")
    assert isinstance(first, Err) and isinstance(first.error, UnexpectedError)
    assert isinstance(first.cause, RuntimeError)
    stored = snapshot(durable_env, "thrown")["steps"]["call-api"]  # type: ignore[index]
    assert stored["meta"] == {"origin": "throw"}
    assert stored["error"]["_tag"] == "UnexpectedError"
    assert stored["cause"]["name"] == "RuntimeError"
    assert stored["cause"]["message"] == "outer failure"
    assert stored["cause"]["cause"]["name"] == "ValueError"
    assert "Traceback" in stored["cause"]["stack"]

    replayed = durable_env.run(body, id="thrown")
    assert isinstance(replayed, Err) and replayed.error == first.error
    assert isinstance(replayed.cause, ReplayedException)
    assert (replayed.cause.name, replayed.cause.message) == ("RuntimeError", "outer failure")
    assert isinstance(replayed.cause.__cause__, ReplayedException)


def test_err_with_an_exception_cause_and_with_a_value_cause(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        yield "a", lambda: Err({"type": "PAYMENT_FAILED", "amount": 12.5}, {"code": 7})

    result = durable_env.run(body, id="err-cause")
    assert result == Err({"type": "PAYMENT_FAILED", "amount": 12.5}, {"code": 7})
    cause = snapshot(durable_env, "err-cause")["steps"]["a"]["cause"]  # type: ignore[index]
    assert cause == {
        "type": "thrown",
        "originalType": "Object",
        "stringRepresentation": "{'code': 7}",
        "value": {"code": 7},
    }
    assert durable_env.run(body, id="err-cause") == result


def test_an_exception_outside_any_step_fails_the_run_without_a_record(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        yield "a", lambda: 1
        raise KeyError("no such thing")

    result = durable_env.run(body, id="outside")
    assert isinstance(result, Err) and isinstance(result.cause, KeyError)
    assert list(snapshot(durable_env, "outside")["steps"]) == ["a"]  # type: ignore[index]


def test_a_repeated_step_key_is_a_programming_error(durable_env: Env) -> None:
    calls = Calls()

    def body(deps: Any) -> Any:
        yield "same", calls("first", 1)
        yield "same", calls("second", 2)

    with pytest.raises(DuplicateStepKeyError, match="'same' is used twice"):
        durable_env.run(body, id="dup")
    assert calls.ran == ["first"]
    assert list(snapshot(durable_env, "dup")["steps"]) == ["same"]  # type: ignore[index]
    # The lease and the in-process guard were released: a fixed workflow resumes.
    assert durable_env.run(lambda deps: (yield "same", calls("again", 1)), id="dup") == Ok(1)
    assert calls.ran == ["first"]


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 1, 1, tzinfo=timezone.utc),
        Decimal("1.5"),
        b"bytes",
        float("nan"),
        float("inf"),
        2**53 + 1,  # a double cannot hold it: JavaScript would round it
        -(2**60) - 1,
        10**400,
        (1, 2),
        {1, 2},
        {1: "int key"},
        {"nested": [1, {"deep": Decimal("2")}]},
        "lone \ud800 surrogate",
    ],
    ids=repr,
)
def test_values_json_would_change_are_refused_at_the_step(durable_env: Env, value: Any) -> None:
    def body(deps: Any) -> Any:
        yield "ok", lambda: 1
        yield "bad", lambda: value

    with pytest.raises(UnsupportedValueError, match="the value of step 'bad'"):
        durable_env.run(body, id="values")
    assert list(snapshot(durable_env, "values")["steps"]) == ["ok"]  # type: ignore[index]


@pytest.mark.parametrize("value", [2**53, 2**60, -(2**70), 10**300 // 10**300 * 2**1000])
def test_integers_a_double_holds_exactly_are_kept(durable_env: Env, value: int) -> None:
    def body(deps: Any) -> Any:
        got = yield "big", lambda: value
        return got

    assert durable_env.run(body, id="ints") == Ok(value)
    assert durable_env.run(body, id="ints") == Ok(value)  # replayed from the row


def test_values_awaitly_stores_are_carried_through_unchanged(durable_env: Env) -> None:
    """As Node.js writes them: a lone surrogate (escaped), an integer past 2**53,
    1e21 and 5e-324, and nesting past what Python's json module follows."""
    deep = "[" * 4000 + '"\\ud83d"' + "]" * 4000
    node_row = (
        '{"formatVersion":1,"workflowName":"carry","steps":{'
        r'"cut":{"ok":true,"value":"Zo\u00eb \ud83d"},'  # JSON.stringify's escapes
        '"big":{"ok":true,"value":12345678901234567000},'
        '"floats":{"ok":true,"value":[1e+21,5e-324]},'
        f'"deep":{{"ok":true,"value":{deep}}}}},'
        '"execution":{"status":"running","lastUpdated":"2026-01-01T00:00:00.000Z"},'
        '"metadata":{"version":1}}'
    )
    durable_env.kv.set("workflow:state:carry", node_row)
    seen: dict[str, Any] = {}

    def body(deps: Any) -> Any:
        for key in ("cut", "big", "floats", "deep"):
            seen[key] = yield key, lambda: pytest.fail("a recorded step ran again")
        yield "next", lambda: "done"
        yield "stop", lambda: Err("PAUSE")  # keep the row, as a crash would

    assert durable_env.run(body, id="carry") == Err("PAUSE", None)
    assert seen["cut"] == "Zoë \ud83d" and seen["big"] == 12345678901234567000
    assert seen["floats"] == [1e21, 5e-324]
    written = durable_env.row("carry")
    assert '"Zo\\u00eb' not in written  # written as Node writes it: the letter raw
    assert '"Zoë \\ud83d"' in written  # and the lone surrogate escaped
    assert '"value":12345678901234567000' in written
    assert '"value":[1e+21,5e-324]' in written
    assert deep in written


def test_interrupts_end_the_run_without_recording_the_step(durable_env: Env) -> None:
    calls = Calls()
    interrupt = KeyboardInterrupt() if durable_env.flavour == "sync" else _cancelled()

    def stop() -> Any:
        calls.ran.append("interrupted")
        raise interrupt

    def body(deps: Any) -> Any:
        yield "a", calls("a", 1)
        yield "b", stop

    with pytest.raises(type(interrupt)):
        durable_env.run(body, id="interrupted")
    assert list(snapshot(durable_env, "interrupted")["steps"]) == ["a"]  # type: ignore[index]

    def resumed(deps: Any) -> Any:
        yield "a", calls("a", 1)
        return (yield "b", calls("b", 2))

    assert durable_env.run(resumed, id="interrupted") == Ok(2)  # lease released, b runs
    assert calls.ran == ["a", "interrupted", "b"]


def _cancelled() -> BaseException:
    import asyncio

    return asyncio.CancelledError()


def test_version_mismatch_throw_clear_and_migrate(durable_env: Env) -> None:
    def failing(deps: Any) -> Any:
        yield "a", lambda: "v1"
        yield "b", lambda: Err("later")

    durable_env.run(failing, id="versioned")
    calls = Calls()

    def v2(deps: Any) -> Any:
        a = yield "a", calls("a", "v2")
        return a

    mismatch = durable_env.run(v2, id="versioned", version=2)
    assert mismatch == Err(VersionMismatch("versioned", 1, 2))
    assert "stored state at version 1" in mismatch.error.message  # type: ignore[union-attr]
    assert calls.ran == []

    migrated = durable_env.run(
        v2,
        id="versioned",
        version=2,
        on_version_mismatch=lambda info: Migrated(
            {"formatVersion": 1, "steps": {"a": {"ok": True, "value": "migrated"}},
             "execution": {"status": "running"}, "metadata": {"version": 2}}
        ),
    )  # fmt: skip
    assert migrated == Ok("migrated") and calls.ran == []

    durable_env.run(failing, id="versioned")
    cleared = durable_env.run(
        v2, id="versioned", version=2, on_version_mismatch=lambda info: "clear"
    )
    assert cleared == Ok("v2") and calls.ran == ["a"]


def test_corrupt_state_is_reported_never_treated_as_missing(durable_env: Env) -> None:
    calls = Calls()

    def body(deps: Any) -> Any:
        yield "a", calls("a", 1)

    for bad in ("not json", '{"formatVersion": 2, "steps": {}}', "[1, 2]"):
        durable_env.kv.set("workflow:state:corrupt", bad)
        result = durable_env.run(body, id="corrupt")
        assert isinstance(result, Err) and isinstance(result.error, CorruptState)
        assert "workflow:state:corrupt" in result.error.message
    assert calls.ran == []
    assert durable_env.row("corrupt") == "[1, 2]"


def test_the_older_serialized_state_format_resumes(durable_env: Env) -> None:
    older = {
        "version": 1,
        "entries": {
            "fetch-user": {"result": {"ok": True, "value": {"id": "123"}}},
            "charge": {
                "result": {
                    "ok": False,
                    "error": "DECLINED",
                    "cause": {"type": "error", "errorName": "Error", "errorMessage": "card"},
                },
                "meta": {"origin": "result"},
            },
        },
        "metadata": {"version": 1, "lastStepKey": "charge"},
    }
    durable_env.kv.set("workflow:state:old", json.dumps(older))
    calls = Calls()

    def body(deps: Any) -> Any:
        yield "fetch-user", calls("fetch-user")
        yield "charge", calls("charge")

    result = durable_env.run(body, id="old")
    assert isinstance(result, Err) and result.error == "DECLINED"
    assert isinstance(result.cause, ReplayedException) and result.cause.message == "card"
    assert calls.ran == []


def test_in_process_concurrency_is_refused(durable_env: Env) -> None:
    inner: list[Any] = []

    def nested(deps: Any) -> Any:
        yield "only", lambda: 1

    def body(deps: Any) -> Any:
        if durable_env.flavour == "sync":
            yield "start-again", lambda: inner.append(durable_env.run(nested, id="busy"))
        else:
            yield "noop", lambda: None
        return 1

    if durable_env.flavour == "sync":
        assert durable_env.run(body, id="busy") == Ok(1)
        assert inner == [Err(ConcurrentExecution("busy", "in-process"))]
    else:
        import asyncio

        from durable_harness import workflow

        async def slow(step: Any, deps: Any) -> Any:
            await step(lambda: asyncio.sleep(0.2), key="slow")
            return "first"

        async def both() -> list[Any]:
            run = durable.run_async
            return list(
                await asyncio.gather(
                    run(None, slow, id="busy", store=durable_env.store),
                    run(None, workflow(nested, "async"), id="busy", store=durable_env.store),
                )
            )

        first, second = durable_env.loop.run_until_complete(both())
        assert first == Ok("first")
        assert second == Err(ConcurrentExecution("busy", "in-process"))


def test_a_lease_held_elsewhere_is_cross_process_concurrency(durable_env: Env) -> None:
    calls = Calls()
    durable_env.kv.add("workflow:lock:leased", '{"ownerToken":"someone-else"}', 60)

    def body(deps: Any) -> Any:
        yield "a", calls("a", 1)

    result = durable_env.run(body, id="leased")
    assert result == Err(ConcurrentExecution("leased", "cross-process"))
    assert "lease held by another process" in result.error.message  # type: ignore[union-attr]
    assert calls.ran == []
    # allow_concurrent turns the guard off.
    assert durable_env.run(body, id="leased", allow_concurrent=True) == Ok(None)
    assert durable_env.kv.get("workflow:lock:leased") == '{"ownerToken":"someone-else"}'


def test_the_lease_is_released_after_every_run(durable_env: Env) -> None:
    durable_env.run(lambda deps: (yield "a", lambda: 1), id="released")
    durable_env.run(lambda deps: (yield "a", lambda: Err("x")), id="released-err")
    assert durable_env.kv.keys_with_prefix("workflow:lock:") == []


def test_a_lost_lease_stops_the_run_and_keeps_the_row(durable_env: Env) -> None:
    """Another owner takes the lease mid-step: the step's checkpoint is refused."""
    import asyncio
    import time

    calls = Calls()
    thief = '{"ownerToken":"thief"}'

    def steal_sync() -> Any:
        calls.ran.append("a")
        durable_env.kv.set("workflow:lock:stolen", thief, 60)
        time.sleep(0.5)
        return 1

    async def steal_async() -> Any:  # the event loop must stay free for the heartbeat
        calls.ran.append("a")
        written = durable_env.store.set("workflow:lock:stolen", thief, 60)
        if written is not None:
            await written
        await asyncio.sleep(0.5)
        return 1

    steal = steal_sync if durable_env.flavour == "sync" else steal_async

    def body(deps: Any) -> Any:
        yield "a", steal
        yield "b", calls("b", 2)

    result = durable_env.run(body, id="stolen", lease_ttl=0.6, heartbeat_interval=0.2)
    assert isinstance(result, Err) and result.error.type == "LEASE_EXPIRED"
    assert calls.ran == ["a"]
    # Its checkpoint is fenced by the lease: the stale owner wrote nothing.
    assert durable_env.row("stolen") is None
    assert durable_env.kv.get("workflow:lock:stolen") == thief


def test_the_heartbeat_keeps_a_long_step_s_lease(durable_env: Env) -> None:
    import asyncio
    import time

    def slow_sync() -> Any:
        time.sleep(1.0)
        return "done"

    async def slow_async() -> Any:
        await asyncio.sleep(1.0)
        return "done"

    slow = slow_sync if durable_env.flavour == "sync" else slow_async

    def body(deps: Any) -> Any:
        return (yield "slow", slow)

    assert durable_env.run(body, id="long", lease_ttl=0.5, heartbeat_interval=0.1) == Ok("done")


def test_idempotency_key_returns_the_first_result(durable_env: Env) -> None:
    calls = Calls()

    def body(deps: Any) -> Any:
        return (yield "only", calls("only", "done"))

    first = durable_env.run(body, id="wf-idem", idempotency_key="req-42", input={"orderId": 9})
    assert first == Ok("done")
    record = json.loads(durable_env.kv.get("workflow:state:idem:req-42"))
    assert record["execution"]["status"] == "completed"
    assert record["metadata"] == {
        "workflowId": "wf-idem",
        "idempotencyKey": "req-42",
        "input": {"orderId": 9},
        "finalResult": {"ok": True, "value": "done"},
    }
    again = durable_env.run(body, id="wf-idem-2", idempotency_key="req-42", input={"orderId": 9})
    assert again == Ok("done") and calls.ran == ["only"]
    conflict = durable_env.run(body, id="wf-idem", idempotency_key="req-42", input={"orderId": 10})
    assert conflict == Err(IdempotencyConflict("wf-idem", "req-42"))


def test_idempotency_marker_of_another_run_is_concurrency_and_a_failed_run_frees_the_key(
    durable_env: Env,
) -> None:
    def failing(deps: Any) -> Any:
        yield "a", lambda: Err("no")

    assert durable_env.run(failing, id="wf-a", idempotency_key="k") == Err("no", None)
    assert durable_env.kv.get("workflow:state:idem:k") is None  # freed
    durable_env.kv.set(
        "workflow:state:idem:k",
        json.dumps(
            {
                "formatVersion": 1,
                "steps": {},
                "execution": {"status": "running", "lastUpdated": "2026-01-01T00:00:00.000Z"},
                "metadata": {"workflowId": "wf-other", "idempotencyKey": "k"},
            }
        ),
    )
    busy = durable_env.run(failing, id="wf-a", idempotency_key="k")
    assert busy == Err(ConcurrentExecution("wf-other", "cross-process", "k"))
    assert "with idempotency key 'k' is already running" in busy.error.message  # type: ignore[union-attr]


def test_a_crashed_idempotent_run_resumes_under_its_own_id(durable_env: Env) -> None:
    calls = Calls()

    def body(deps: Any) -> Any:
        yield "a", calls("a", 1)
        return (yield "b", calls("b", 2))

    marker = {
        "formatVersion": 1,
        "steps": {},
        "execution": {"status": "running", "lastUpdated": "2026-01-01T00:00:00.000Z"},
        "metadata": {"workflowId": "wf-crashed", "idempotencyKey": "k2"},
    }
    durable_env.kv.set("workflow:state:idem:k2", json.dumps(marker))
    durable_env.kv.set(
        "workflow:state:wf-crashed",
        json.dumps(
            {
                "formatVersion": 1,
                "steps": {"a": {"ok": True, "value": 1}},
                "execution": {"status": "running", "lastUpdated": "2026-01-01T00:00:00.000Z"},
                "metadata": {"version": 1},
            }
        ),
    )
    assert durable_env.run(body, id="wf-crashed", idempotency_key="k2") == Ok(2)
    assert calls.ran == ["b"]


def test_retention_expires_failed_runs_and_idempotency_records(durable_env: Env) -> None:
    import time

    durable_env.run(lambda deps: (yield "a", lambda: Err("x")), id="kept", retention=1)
    durable_env.run(
        lambda deps: (yield "a", lambda: 1), id="idem", idempotency_key="r", retention=1
    )
    assert durable_env.row("kept") is not None
    assert durable_env.kv.get("workflow:state:idem:r") is not None
    time.sleep(1.3)
    assert durable_env.row("kept") is None
    assert durable_env.kv.get("workflow:state:idem:r") is None


def test_helpers(durable_env: Env) -> None:
    import time

    for i in range(3):
        durable_env.run(lambda deps: (yield "a", lambda: Err("x")), id=f"order-{i}")
        time.sleep(0.01)
    durable_env.run(lambda deps: (yield "a", lambda: Err("x")), id="invoice-1")
    durable_env.run(lambda deps: (yield "a", lambda: 1), id="done", idempotency_key="key")
    durable_env.kv.set("unrelated", "keep me")

    pending = durable_env.helper("list_pending")
    assert [p.id for p in pending] == ["invoice-1", "order-2", "order-1", "order-0"]
    assert pending[0].steps == 1 and pending[0].failed_step == "a"
    assert pending[0].state is durable.RunState.FAILED
    assert [p.id for p in durable_env.helper("list_pending", prefix="order-", limit=2)] == [
        "order-2",
        "order-1",
    ]
    assert durable_env.helper("has_state", "order-0")
    assert not durable_env.helper("has_state", "done")
    assert durable_env.helper("delete_state", "order-0")
    assert not durable_env.helper("delete_state", "order-0")
    report = durable_env.helper("delete_states", ["order-1", "order-2", "missing"])
    assert (report.deleted, report.failed) == (2, {})
    assert durable_env.helper("clear_state") == 2  # invoice-1 and the idempotency record
    assert durable_env.kv.get("unrelated") == "keep me"
    assert durable_env.helper("list_pending") == []


def test_events_tell_the_story(durable_env: Env) -> None:
    events: list[tuple[str, str]] = []

    def body(deps: Any) -> Any:
        yield "a", lambda: 1
        yield "b", lambda: Err("no")

    durable_env.run(body, id="events", on_event=lambda e: events.append((e.type, e.step_key)))
    assert events == [
        ("step_start", "a"),
        ("persist_success", "a"),
        ("step_success", "a"),
        ("step_start", "b"),
        ("persist_success", "b"),
        ("step_error", "b"),
    ]
    events.clear()
    durable_env.run(body, id="events", on_event=lambda e: events.append((e.type, e.step_key)))
    assert events == [("step_skipped", "a"), ("step_skipped", "b")]


def test_each_step_records_how_long_it_took_kept_on_resume(durable_env: Env) -> None:
    """Milliseconds by the run's clock, in step order, for ``show``; a resumed run keeps
    those of the steps it replays."""
    clock = FakeClock()
    failing = {"b": True}

    def b() -> Any:
        clock.sleep(0.5)
        return Err("NOT_YET") if failing["b"] else "b"

    def body(deps: Any) -> Any:
        yield "a", lambda: clock.sleep(2)
        yield "b", b
        yield "c", lambda: Err("STOP")

    durable_env.run(body, id="timed", clock=clock)
    stored = snapshot(durable_env, "timed")
    assert stored is not None and stored["metadata"]["sqlalchemyAwaitlyStepMs"] == [2000, 500]
    durable_env.helper("retry_step", "timed")
    failing["b"] = False
    durable_env.run(body, id="timed", clock=clock)
    stored = snapshot(durable_env, "timed")
    assert stored is not None and list(stored["steps"]) == ["a", "b", "c"]
    assert stored["metadata"]["sqlalchemyAwaitlyStepMs"] == [2000, 500, 0]


def test_metadata_is_merged_and_unknown_keys_kept(durable_env: Env) -> None:
    durable_env.kv.set(
        "workflow:state:meta",
        json.dumps(
            {
                "formatVersion": 1,
                "steps": {"a": {"ok": True, "value": 1}},
                "execution": {"status": "running", "lastUpdated": "2026-01-01T00:00:00.000Z"},
                "metadata": {"version": 7, "customKey": {"x": 1}, "lastStepKey": "a"},
            }
        ),
    )

    def body(deps: Any) -> Any:
        yield "a", lambda: 1
        yield "b", lambda: Err("stop")

    durable_env.run(body, id="meta", version=7, metadata={"tenant": "acme"})
    stored = snapshot(durable_env, "meta")
    assert stored is not None
    # How long each step took: unknown for the one another runtime ran.
    took = stored["metadata"].pop("sqlalchemyAwaitlyStepMs")
    assert took[0] is None and isinstance(took[1], int)
    assert stored["metadata"] == {
        "version": 7,
        "customKey": {"x": 1},
        "lastStepKey": "b",
        "tenant": "acme",
    }
    assert stored["workflowName"] == "meta"


@pytest.mark.parametrize("durable_env", ["memory-sync", "memory-async"], indirect=True)
def test_the_memory_store_has_no_transactions(durable_env: Env) -> None:
    from durable_harness import Tx

    def body(deps: Any) -> Any:
        yield Tx("charge", lambda conn: None)

    with pytest.raises(DurableUsageError, match="needs a SQLAlchemy store"):
        durable_env.run(body, id="tx-mem")
