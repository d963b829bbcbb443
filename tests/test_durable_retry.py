"""``retry=`` and ``step.sleep``: awaitly 1.35's arithmetic, events and stored outcomes.

Every run gets a clock that records each wait and returns at once, with a
fixed random source: no test sleeps through a backoff.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from durable_harness import Env, Sleep, With
from fake_clock import FakeClock

from sqlalchemy_awaitly import InvalidInputError
from sqlalchemy_awaitly.durable import (
    DurableEvent,
    DurableUsageError,
    Err,
    Ok,
    Retry,
    Timeout,
    TimeoutInfo,
)


class Flaky:
    """Fails (raising, or returning ``Err``) until its ``succeed_on``-th call."""

    def __init__(self, succeed_on: int | None, *, returns_err: bool = False) -> None:
        self.calls = 0
        self.succeed_on = succeed_on
        self.returns_err = returns_err

    def __call__(self) -> Any:
        self.calls += 1
        if self.succeed_on is not None and self.calls >= self.succeed_on:
            return f"done@{self.calls}"
        if self.returns_err:
            return Err({"type": "BOOM", "n": self.calls})
        raise ConnectionError(f"try {self.calls}")


def stop() -> Any:
    return Err("STOP")  # a later failing step keeps the run's row to look at


def stored(env: Env, workflow_id: str) -> dict[str, Any]:
    raw = env.row(workflow_id)
    assert raw is not None
    return dict(json.loads(raw)["steps"])


# --- the arithmetic ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backoff", "expected_ms"),
    [
        ("fixed", [100, 100, 100, 100, 100]),
        ("linear", [100, 200, 300, 400, 500]),
        ("exponential", [100, 200, 400, 800, 1000]),
    ],
)
def test_delays_are_awaitly_s_without_jitter(backoff: Any, expected_ms: list[int]) -> None:
    # awaitly 1.35 measured: initialDelay 100 ms, maxDelay 1000 ms, jitter off.
    policy = Retry(6, backoff=backoff, initial_delay=0.1, max_delay=1.0, jitter=False)
    assert [round(policy.delay(n, 0.99) * 1000) for n in range(1, 6)] == expected_ms


def test_jitter_comes_after_the_cap_and_is_floored_to_milliseconds() -> None:
    policy = Retry(6, initial_delay=0.1, max_delay=1.0)
    # awaitly measured 1162 ms for attempt 5 (1600 capped to 1000, then jitter).
    assert policy.delay(5, 0.648) == 1.162
    assert policy.delay(1, 0.0) == 0.1 and policy.delay(1, 0.9999) == 0.124
    assert policy.delay(2000, 0.5) == 1.125  # huge attempt numbers do not overflow


def test_defaults_and_timedelta_are_awaitly_s() -> None:
    policy = Retry(3)
    assert (policy.backoff, policy.initial_delay, policy.max_delay, policy.jitter) == (
        "exponential",
        0.1,
        30.0,
        True,
    )
    assert Retry(2, initial_delay=timedelta(milliseconds=250), jitter=False).delay(1, 0) == 0.25


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"attempts": 0}, InvalidInputError),
        ({"attempts": True}, TypeError),
        ({"attempts": 2, "backoff": "random"}, InvalidInputError),
        ({"attempts": 2, "initial_delay": -1}, InvalidInputError),
        ({"attempts": 2, "max_delay": float("inf")}, InvalidInputError),
        ({"attempts": 2, "jitter": 1}, TypeError),
        ({"attempts": 2, "should_retry": "yes"}, TypeError),
    ],
)
def test_a_bad_policy_is_refused_where_it_is_written(options: Any, error: type) -> None:
    with pytest.raises(error):
        Retry(**options)


# --- in a run ---------------------------------------------------------------------------


def test_a_flaky_step_is_retried_and_only_its_last_outcome_is_stored(durable_env: Env) -> None:
    clock = FakeClock()
    flaky = Flaky(3)
    events: list[DurableEvent] = []

    def body(deps: Any) -> Any:
        yield With("flaky", flaky, retry=Retry(3, jitter=False), name="Flaky call")
        yield "stop", stop

    result = durable_env.run(body, id="wf-retry", clock=clock, on_event=events.append)
    assert result == Err("STOP")
    assert flaky.calls == 3 and clock.waits == [0.1, 0.2]
    assert stored(durable_env, "wf-retry")["flaky"] == {"ok": True, "value": "done@3"}
    retries = [e for e in events if e.type == "step_retry"]
    assert [(e.attempt, e.max_attempts, e.delay, e.step_name) for e in retries] == [
        (2, 3, 0.1, "Flaky call"),
        (3, 3, 0.2, "Flaky call"),
    ]
    assert isinstance(retries[0].error, ConnectionError) and retries[0].failure is retries[0].error
    assert not [e for e in events if e.type == "step_retries_exhausted"]


def test_retries_exhausted_store_the_last_error_as_a_plain_failure(durable_env: Env) -> None:
    clock = FakeClock(random=0.5)
    returns = Flaky(None, returns_err=True)
    events: list[DurableEvent] = []

    def body(deps: Any) -> Any:
        yield With("fail", returns, retry=3)

    result = durable_env.run(body, id="wf-exhausted", clock=clock, on_event=events.append)
    assert result == Err({"type": "BOOM", "n": 3})
    assert returns.calls == 3
    assert clock.waits == [0.112, 0.225]  # 100 and 200 ms, each with a quarter of 0.5 on top
    entry = stored(durable_env, "wf-exhausted")["fail"]
    assert entry["error"] == {"type": "BOOM", "n": 3} and entry["meta"] == {"origin": "result"}
    kinds = [e.type for e in events if e.step_key == "fail"]
    assert kinds == [
        "step_start",
        "step_retry",
        "step_retry",
        "step_retries_exhausted",
        "persist_success",
        "step_error",
    ]
    exhausted = next(e for e in events if e.type == "step_retries_exhausted")
    assert (exhausted.attempt, exhausted.max_attempts) == (3, 3)
    assert exhausted.failure == {"type": "BOOM", "n": 3}


def test_a_step_that_keeps_raising_ends_as_one_that_raised_once(durable_env: Env) -> None:
    raising = Flaky(None)

    def body(deps: Any) -> Any:
        yield With("raises", raising, retry=Retry(2, jitter=False))

    result = durable_env.run(body, id="wf-raises", clock=FakeClock())
    assert isinstance(result, Err) and result.error.type == "UNEXPECTED_ERROR"
    assert "try 2" in result.error.message
    entry = stored(durable_env, "wf-raises")["raises"]
    assert entry["error"]["_tag"] == "UnexpectedError" and entry["meta"] == {"origin": "throw"}
    assert entry["cause"]["name"] == "ConnectionError" and entry["cause"]["message"] == "try 2"


def test_should_retry_and_on_retry_see_the_failed_attempt(durable_env: Env) -> None:
    seen: list[tuple[str, Any, int, float | None]] = []

    def should_retry(error: Any, attempt: int) -> bool:
        seen.append(("should", error, attempt, None))
        return attempt < 2

    def on_retry(error: Any, attempt: int, delay: float) -> None:
        seen.append(("on", error, attempt, delay))

    policy = Retry(5, jitter=False, should_retry=should_retry, on_retry=on_retry)
    fails = Flaky(None, returns_err=True)
    events: list[DurableEvent] = []

    def body(deps: Any) -> Any:
        yield With("hooked", fails, retry=policy)

    result = durable_env.run(body, id="wf-hooks", clock=FakeClock(), on_event=events.append)
    assert result == Err({"type": "BOOM", "n": 2})
    assert seen == [
        ("should", {"type": "BOOM", "n": 1}, 1, None),
        ("on", {"type": "BOOM", "n": 1}, 1, 0.1),
        ("should", {"type": "BOOM", "n": 2}, 2, None),
    ]
    exhausted = [e for e in events if e.type == "step_retries_exhausted"]
    assert [(e.attempt, e.max_attempts) for e in exhausted] == [(2, 5)]


def test_a_stored_failure_is_replayed_not_retried(durable_env: Env) -> None:
    fails = Flaky(None, returns_err=True)

    def body(deps: Any) -> Any:
        yield With("once", fails, retry=Retry(2, jitter=False))

    clock = FakeClock()
    assert durable_env.run(body, id="wf-replay", clock=clock) == Err({"type": "BOOM", "n": 2})
    again = FakeClock()
    assert durable_env.run(body, id="wf-replay", clock=again) == Err({"type": "BOOM", "n": 2})
    assert fails.calls == 2 and again.waits == []


def test_a_bad_retry_option_is_a_usage_error_of_the_run(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        yield With("bad", lambda: 1, retry="twice")

    with pytest.raises(DurableUsageError, match="retry must be a Retry or an int"):
        durable_env.run(body, id="wf-bad-retry", clock=FakeClock())


# --- step.sleep -------------------------------------------------------------------------


def test_a_sleep_is_a_step_stored_as_awaitly_stores_it(durable_env: Env) -> None:
    clock = FakeClock()
    events: list[DurableEvent] = []
    after = Flaky(None, returns_err=True)

    def body(deps: Any) -> Any:
        yield Sleep("nap", 5, name="Nap")
        yield Sleep("short", timedelta(milliseconds=1500))
        yield "after", after

    assert not durable_env.run(body, id="wf-sleep", clock=clock, on_event=events.append).ok
    assert clock.waits == [5.0, 1.5]
    steps = stored(durable_env, "wf-sleep")
    assert steps["nap"] == {"ok": True} and steps["short"] == {"ok": True}
    assert [e.step_name for e in events if e.type == "step_start"] == ["Nap", "short", "after"]
    # Resumed after the sleeps ended: they are not slept again.
    again = FakeClock()
    durable_env.run(body, id="wf-sleep", clock=again)
    assert again.waits == []


@pytest.mark.parametrize("duration", [-1, float("nan"), "5s", True])
def test_a_bad_sleep_is_a_usage_error_of_the_run(durable_env: Env, duration: Any) -> None:
    def body(deps: Any) -> Any:
        yield Sleep("nap", duration)

    with pytest.raises(DurableUsageError, match="sleep"):
        durable_env.run(body, id="wf-bad-sleep", clock=FakeClock())


def test_the_result_of_a_run_with_retries_is_the_value(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        value = yield With("flaky", Flaky(2), retry=2)
        return value

    assert durable_env.run(body, id="wf-value", clock=FakeClock()) == Ok("done@2")


# --- step.try_, from_result, from_nullable -----------------------------------------------


def parse(text: str) -> Any:
    return json.loads(text)


def test_try_types_an_exception_and_stores_it_as_awaitly_does(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        ok = yield With("ok", lambda: parse("42"), form="try_", error="PARSE_FAILED")
        assert ok == 42
        yield With(
            "bad",
            lambda: parse("{"),
            form="try_",
            on_error=lambda e: {"type": "PARSE", "why": type(e).__name__},
        )

    result = durable_env.run(body, id="wf-try")
    assert isinstance(result, Err) and result.error == {"type": "PARSE", "why": "JSONDecodeError"}
    assert isinstance(result.cause, json.JSONDecodeError)
    steps = stored(durable_env, "wf-try")
    assert steps["ok"] == {"ok": True, "value": 42}
    bad = steps["bad"]
    assert bad["error"] == {"type": "PARSE", "why": "JSONDecodeError"}
    assert bad["meta"] == {"origin": "throw"}  # awaitly: a caught throw
    assert bad["cause"]["type"] == "error" and bad["cause"]["name"] == "JSONDecodeError"


def test_try_with_retry_retries_the_typed_error(durable_env: Env) -> None:
    flaky = Flaky(None)
    seen: list[Any] = []

    def body(deps: Any) -> Any:
        policy = Retry(2, jitter=False, on_retry=lambda error, attempt, delay: seen.append(error))
        yield With("t", flaky, form="try_", error="DOWN", retry=policy)

    result = durable_env.run(body, id="wf-try-retry", clock=FakeClock())
    assert isinstance(result, Err) and result.error == "DOWN"
    assert flaky.calls == 2 and seen == ["DOWN"]
    # awaitly retries the typed error as a returned one: origin "result".
    assert stored(durable_env, "wf-try-retry")["t"]["meta"] == {"origin": "result"}


def test_from_result_types_an_err_with_the_original_as_cause(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        value = yield With("found", lambda: Ok("v"), form="from_result", error="NOT_FOUND")
        assert value == "v"
        yield With(
            "missing",
            lambda: Err({"code": 404}),
            form="from_result",
            on_error=lambda e: {"type": "NOT_FOUND", "orig": e},
        )

    result = durable_env.run(body, id="wf-from-result")
    assert result == Err({"type": "NOT_FOUND", "orig": {"code": 404}}, {"code": 404})
    missing = stored(durable_env, "wf-from-result")["missing"]
    assert missing["meta"] == {"origin": "result"}
    assert missing["cause"]["type"] == "thrown" and missing["cause"]["value"] == {"code": 404}


def test_from_result_refuses_a_function_that_returns_a_plain_value(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        yield With("plain", lambda: "v", form="from_result", error="E")

    with pytest.raises(DurableUsageError, match="returns Ok or Err"):
        durable_env.run(body, id="wf-from-result-plain")


def test_from_nullable_types_a_none(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        assert (yield With("there", lambda: 0, form="from_nullable", error="GONE")) == 0
        yield With("gone", lambda: None, form="from_nullable", on_null=lambda: {"type": "GONE"})

    assert durable_env.run(body, id="wf-nullable") == Err({"type": "GONE"})
    gone = stored(durable_env, "wf-nullable")["gone"]
    assert gone["error"] == {"type": "GONE"} and gone["meta"] == {"origin": "result"}
    assert gone["cause"] == {
        "type": "thrown",
        "originalType": "undefined",
        "stringRepresentation": "undefined",
    }


@pytest.mark.parametrize("options", [{}, {"error": "E", "on_error": str}])
def test_a_typed_step_needs_exactly_one_of_error_and_on_error(
    durable_env: Env, options: dict[str, Any]
) -> None:
    def body(deps: Any) -> Any:
        yield With("t", lambda: 1, form="try_", **options)

    with pytest.raises(DurableUsageError, match="error= or on_error="):
        durable_env.run(body, id="wf-typed-bad")


# --- timeout= -----------------------------------------------------------------------------

LIMIT = 0.05  # each timed-out attempt waits this long, really: the limit is the runner's


class Slow:
    """A step that outlives its limit until released (sync: a thread; async: a task)."""

    def __init__(self, flavour: str) -> None:
        self.flavour = flavour
        self.calls = 0
        self.released = threading.Event()
        self.signals: list[Any] = []
        self.finished = threading.Event()

    def fn(self) -> Callable[..., Any]:
        def sync(*signal: Any) -> str:
            self.calls += 1
            self.signals.extend(signal)
            self.released.wait(10)
            self.finished.set()
            return "late"

        async def asynchronous(*signal: Any) -> str:
            self.calls += 1
            self.signals.extend(signal)
            try:
                for _ in range(1000):  # about 10 s at most
                    if self.released.is_set():
                        break
                    await asyncio.sleep(0.01)
            finally:  # cancelled too
                self.finished.set()
            return "late"

        return sync if self.flavour == "sync" else asynchronous


@pytest.fixture
def slow(durable_env: Env) -> Iterator[Slow]:
    s = Slow(durable_env.flavour)
    yield s
    s.released.set()
    if durable_env.flavour == "async" and s.calls:

        async def settled() -> None:  # a disconnected task ends before its loop closes
            for _ in range(500):
                if s.finished.is_set():
                    return
                await asyncio.sleep(0.01)

        durable_env.loop.run_until_complete(settled())


def test_a_step_past_its_limit_fails_with_awaitly_s_timeout_error(
    durable_env: Env, slow: Slow
) -> None:
    events: list[DurableEvent] = []

    def body(deps: Any) -> Any:
        yield With("slow", slow.fn(), timeout=LIMIT, name="Slow call")

    result = durable_env.run(body, id="wf-timeout", on_event=events.append)
    failure = {
        "type": "STEP_TIMEOUT",
        "stepName": "Slow call",
        "stepKey": "slow",
        "timeoutMs": 50,
        "attempt": 1,
    }
    assert isinstance(result, Err) and result.error == failure
    assert stored(durable_env, "wf-timeout")["slow"] == {
        "ok": False,
        "error": failure,
        "cause": {
            "type": "thrown",
            "originalType": "Object",
            "stringRepresentation": "[object Object]",
            "value": failure,
        },
        "meta": {"origin": "throw"},
    }
    timeouts = [e for e in events if e.type == "step_timeout"]
    assert [(e.attempt, e.timeout, e.step_name) for e in timeouts] == [(1, LIMIT, "Slow call")]


def test_a_timeout_is_retried_per_attempt(durable_env: Env, slow: Slow) -> None:
    clock = FakeClock()

    def body(deps: Any) -> Any:
        yield With("slow", slow.fn(), timeout=LIMIT, retry=Retry(2, jitter=False))

    result = durable_env.run(body, id="wf-timeout-retry", clock=clock)
    assert isinstance(result, Err) and result.error["attempt"] == 2
    assert slow.calls == 2 and clock.waits == [0.1]


def test_option_succeeds_with_no_value_and_is_not_retried(durable_env: Env, slow: Slow) -> None:
    def body(deps: Any) -> Any:
        value = yield With("slow", slow.fn(), timeout=Timeout(LIMIT, on_timeout="option"), retry=3)
        assert value is None
        yield "stop", stop

    assert durable_env.run(body, id="wf-option", clock=FakeClock()) == Err("STOP")
    assert slow.calls == 1
    assert stored(durable_env, "wf-option")["slow"] == {"ok": True}


def test_a_function_gives_the_failure(durable_env: Env, slow: Slow) -> None:
    seen: list[TimeoutInfo] = []

    def failure(info: TimeoutInfo) -> Any:
        seen.append(info)
        return {"type": "MY_TIMEOUT", "key": info.key}

    def body(deps: Any) -> Any:
        yield With("slow", slow.fn(), timeout=Timeout(LIMIT, on_timeout=failure))

    result = durable_env.run(body, id="wf-timeout-fn")
    assert isinstance(result, Err) and result.error == {"type": "MY_TIMEOUT", "key": "slow"}
    assert seen == [TimeoutInfo("slow", "slow", LIMIT, 1)]


@pytest.mark.parametrize("behaviour", ["error", "disconnect"])
def test_the_work_is_told_to_stop_unless_disconnected(
    durable_env: Env, slow: Slow, behaviour: Any
) -> None:
    def body(deps: Any) -> Any:
        yield With("slow", slow.fn(), timeout=Timeout(LIMIT, on_timeout=behaviour, signal=True))

    result = durable_env.run(body, id=f"wf-signal-{behaviour}")
    assert isinstance(result, Err) and result.error["type"] == "STEP_TIMEOUT"
    (signal,) = slow.signals
    assert signal.is_set() is (behaviour == "error")


def test_a_step_within_its_limit_is_a_plain_step(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        return (yield With("fast", lambda: "quick", timeout=10))

    assert durable_env.run(body, id="wf-fast") == Ok("quick")


@pytest.mark.parametrize("limit", [0, -1, float("nan"), "1s"])
def test_a_bad_timeout_is_a_usage_error_of_the_run(durable_env: Env, limit: Any) -> None:
    def body(deps: Any) -> Any:
        yield With("t", lambda: 1, timeout=limit)

    with pytest.raises(DurableUsageError, match="timeout"):
        durable_env.run(body, id="wf-bad-timeout")


# --- a wait cut short by a crash ------------------------------------------------------------


class Crash(BaseException):
    """The process dying mid-wait: nothing after it runs but the run's own cleanup."""


class CrashingClock(FakeClock):
    def sleep(self, seconds: float) -> None:
        raise Crash()


def waits_in_row(env: Env, workflow_id: str) -> dict[str, Any]:
    raw = env.row(workflow_id)
    assert raw is not None
    return dict(json.loads(raw)["metadata"].get("sqlalchemyAwaitly", {}).get("waits", {}))


def crash(env: Env, body: Any, workflow_id: str, clock: FakeClock) -> None:
    with pytest.raises(Crash):
        env.run(body, id=workflow_id, clock=clock)


def test_a_sleep_resumed_after_a_crash_sleeps_only_the_rest(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        yield "before", lambda: "done"
        yield Sleep("nap", 600)
        yield "stop", stop

    start = 1_800_000_000.0
    crash(durable_env, body, "wf-nap", CrashingClock(now=start))
    assert waits_in_row(durable_env, "wf-nap") == {"nap": {"until": 1_800_000_600_000}}
    resumed = FakeClock(now=start + 100)
    assert durable_env.run(body, id="wf-nap", clock=resumed) == Err("STOP")
    assert resumed.waits == [500.0]
    assert waits_in_row(durable_env, "wf-nap") == {}  # the sleep ended: forgotten
    assert stored(durable_env, "wf-nap")["nap"] == {"ok": True}


def test_a_sleep_resumed_after_its_end_does_not_wait(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        yield Sleep("nap", 60)
        yield "stop", stop

    crash(durable_env, body, "wf-nap-late", CrashingClock(now=1_800_000_000.0))
    late = FakeClock(now=1_800_000_100.0)
    assert durable_env.run(body, id="wf-nap-late", clock=late) == Err("STOP")
    assert late.waits == [0.0]


def test_a_retry_resumed_after_a_crash_keeps_its_budget_and_its_time(durable_env: Env) -> None:
    fails = Flaky(None, returns_err=True)
    events: list[DurableEvent] = []
    policy = Retry(4, backoff="fixed", initial_delay=600, max_delay=600, jitter=False)

    def body(deps: Any) -> Any:
        yield With("call", fails, retry=policy)

    start = 1_800_000_000.0
    crash(durable_env, body, "wf-backoff", CrashingClock(now=start))
    assert fails.calls == 1
    assert waits_in_row(durable_env, "wf-backoff") == {
        "call": {"attempt": 1, "until": 1_800_000_600_000}
    }
    resumed = FakeClock(now=start + 570)
    result = durable_env.run(body, id="wf-backoff", clock=resumed, on_event=events.append)
    assert result == Err({"type": "BOOM", "n": 4})
    assert fails.calls == 4  # attempts 2, 3 and 4: not a fresh budget of four
    assert resumed.waits == [30.0, 600.0, 600.0]  # the rest of the first backoff, then two
    assert [e.attempt for e in events if e.type == "step_retry"] == [3, 4]
    exhausted = [e.attempt for e in events if e.type == "step_retries_exhausted"]
    assert exhausted == [4]


def test_a_malformed_wait_record_is_ignored(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        yield Sleep("nap", 5)
        yield "stop", stop

    crash(durable_env, body, "wf-nap-bad", CrashingClock())
    row = json.loads(durable_env.row("wf-nap-bad") or "{}")
    row["metadata"]["sqlalchemyAwaitly"] = {"waits": {"nap": {"until": "soon"}}}
    durable_env.kv.set("workflow:state:wf-nap-bad", json.dumps(row))
    again = FakeClock()
    assert durable_env.run(body, id="wf-nap-bad", clock=again) == Err("STOP")
    assert again.waits == [5.0]  # slept in full, as awaitly would


def test_try_takes_a_time_limit_too(durable_env: Env, slow: Slow) -> None:
    def body(deps: Any) -> Any:
        yield With("t", slow.fn(), form="try_", error="RAISED", timeout=LIMIT)

    result = durable_env.run(body, id="wf-try-timeout")
    assert isinstance(result, Err) and result.error["type"] == "STEP_TIMEOUT"
    entry = stored(durable_env, "wf-try-timeout")["t"]
    assert entry["meta"] == {"origin": "throw"} and entry["cause"]["value"] == result.error
