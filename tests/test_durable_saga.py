"""``compensate=``: a failed run undoes its completed steps in reverse order, each once
in total, across crashes and reruns, as awaitly 1.35's saga does within one process.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from durable_harness import Env, With

from sqlalchemy_awaitly.durable import Err, LeaseExpired


class Undo:
    """Compensations that note what they undid (``fail``: these raise instead)."""

    def __init__(self, fail: tuple[str, ...] = (), crash: tuple[str, ...] = ()) -> None:
        self.done: list[tuple[str, Any]] = []
        self.fail, self.crash = set(fail), set(crash)
        self._lock = threading.Lock()

    def of(self, key: str) -> Any:
        def undo(value: Any) -> None:
            if key in self.crash:
                self.crash.discard(key)  # dies once, mid-compensation
                raise Crash()
            with self._lock:
                self.done.append((key, value))
            if key in self.fail:
                raise RuntimeError(f"cannot undo {key}")

        return undo


class Crash(BaseException):
    """The process dying mid-compensation."""


def saga(undo: Undo, fails: bool = True) -> Any:
    def body(deps: Any) -> Any:
        yield With("reserve", lambda: {"room": 7}, compensate=undo.of("reserve"))
        yield With("charge", lambda: "ch_1", compensate=undo.of("charge"))
        yield "note", lambda: "no compensation"
        yield With("ship", lambda: Err({"type": "NO_COURIER"}) if fails else "sent")
        return "booked"

    return body


def record(env: Env, workflow_id: str) -> dict[str, Any]:
    raw = env.row(workflow_id)
    assert raw is not None
    section = json.loads(raw)["metadata"].get("sqlalchemyAwaitly", {})
    return dict(section.get("compensation", {}))


def test_a_failed_run_undoes_its_completed_steps_last_first(durable_env: Env) -> None:
    undo = Undo()
    assert durable_env.run(saga(undo), id="wf-saga") == Err({"type": "NO_COURIER"})
    assert undo.done == [("charge", "ch_1"), ("reserve", {"room": 7})]
    assert record(durable_env, "wf-saga") == {
        "pending": [],
        "done": ["charge", "reserve"],
        "errors": [],
    }


def test_a_rerun_of_the_failed_run_undoes_nothing_again(durable_env: Env) -> None:
    undo = Undo()
    durable_env.run(saga(undo), id="wf-saga-rerun")
    assert durable_env.run(saga(undo), id="wf-saga-rerun") == Err({"type": "NO_COURIER"})
    assert [key for key, _ in undo.done] == ["charge", "reserve"]  # once in total


def test_a_run_that_succeeds_undoes_nothing(durable_env: Env) -> None:
    undo = Undo()
    assert durable_env.run(saga(undo, fails=False), id="wf-saga-ok").value == "booked"
    assert undo.done == []


def test_a_failing_compensation_gives_awaitly_s_saga_error(durable_env: Env) -> None:
    undo = Undo(fail=("charge",))
    result = durable_env.run(saga(undo), id="wf-saga-err")
    assert [key for key, _ in undo.done] == ["charge", "reserve"]  # the rest still ran
    assert isinstance(result, Err)
    assert result.error["type"] == "SAGA_COMPENSATION_ERROR"
    assert result.error["originalError"] == {"type": "NO_COURIER"}
    [failed] = result.error["compensationErrors"]
    assert failed["stepName"] == "charge" and isinstance(failed["error"], RuntimeError)
    stored = record(durable_env, "wf-saga-err")["errors"]
    assert [e["stepName"] for e in stored] == ["charge"]
    assert stored[0]["error"]["message"] == "cannot undo charge"
    again = durable_env.run(saga(undo), id="wf-saga-err")  # the same answer on a rerun
    assert again.error["type"] == "SAGA_COMPENSATION_ERROR"
    assert again.error["compensationErrors"][0]["error"]["message"] == "cannot undo charge"
    assert len(undo.done) == 2


def test_a_crash_mid_compensation_resumes_it_without_repeating_what_ran(
    durable_env: Env,
) -> None:
    undo = Undo(crash=("reserve",))
    with pytest.raises(Crash):
        durable_env.run(saga(undo), id="wf-saga-crash")
    assert undo.done == [("charge", "ch_1")]
    assert record(durable_env, "wf-saga-crash")["pending"] == ["reserve"]
    assert durable_env.run(saga(undo), id="wf-saga-crash") == Err({"type": "NO_COURIER"})
    assert undo.done == [("charge", "ch_1"), ("reserve", {"room": 7})]


def test_a_resumed_run_undoes_the_steps_it_replayed(durable_env: Env) -> None:
    # awaitly compensates only the steps one execution ran itself: a run resumed
    # after a crash would leave the crashed process's steps in place.
    undo = Undo()

    def crashing(deps: Any) -> Any:
        yield With("reserve", lambda: {"room": 7}, compensate=undo.of("reserve"))
        yield "crash", crash_once

    crashed = [False]

    def crash_once() -> Any:
        if not crashed[0]:
            crashed[0] = True
            raise Crash()
        return Err({"type": "LATER_FAILURE"})

    with pytest.raises(Crash):
        durable_env.run(crashing, id="wf-saga-resumed")
    assert durable_env.run(crashing, id="wf-saga-resumed") == Err({"type": "LATER_FAILURE"})
    assert undo.done == [("reserve", {"room": 7})]


def test_a_workflow_that_fails_outside_a_step_is_compensated_once(durable_env: Env) -> None:
    undo = Undo()

    def body(deps: Any) -> Any:
        yield With("reserve", lambda: 1, compensate=undo.of("reserve"))
        raise ValueError("bad input after the step")

    for _ in range(2):  # the rerun fails again the same way, and undoes nothing again
        result = durable_env.run(body, id="wf-saga-body")
        assert isinstance(result, Err) and isinstance(result.cause, ValueError)
    assert undo.done == [("reserve", 1)]


def test_a_lost_lease_is_not_a_failure_to_compensate(durable_env: Env) -> None:
    undo = Undo()
    thief = '{"ownerToken":"thief"}'

    def steal_sync() -> Any:
        durable_env.kv.set("workflow:lock:wf-saga-lease", thief, 60)

    async def steal_async() -> Any:  # the loop is running: the async store itself
        written = durable_env.store.set("workflow:lock:wf-saga-lease", thief, 60)
        if written is not None:
            await written

    steal = steal_sync if durable_env.flavour == "sync" else steal_async

    def body(deps: Any) -> Any:
        yield With("reserve", lambda: 1, compensate=undo.of("reserve"))
        yield "steal", steal  # its own checkpoint is refused: the lease changed hands
        yield "after", lambda: 2

    result = durable_env.run(body, id="wf-saga-lease")
    assert isinstance(result, Err) and isinstance(result.error, LeaseExpired)
    assert undo.done == []


def test_async_compensations_are_awaited() -> None:
    import asyncio

    from sqlalchemy_awaitly import durable
    from sqlalchemy_awaitly.durable import MemoryStore

    undone: list[Any] = []

    async def release(value: Any) -> None:
        await asyncio.sleep(0)
        undone.append(value)

    async def wf(step: Any, deps: Any) -> Any:
        await step(lambda: "hold-1", key="hold", compensate=release)
        return await step(lambda: Err("FAIL"), key="fail")

    result = asyncio.run(durable.run_async(None, wf, id="wf-async-saga", store=MemoryStore()))
    assert result == Err("FAIL") and undone == ["hold-1"]


def test_compensate_must_be_callable(durable_env: Env) -> None:
    from sqlalchemy_awaitly.durable import DurableUsageError

    def body(deps: Any) -> Any:
        yield With("reserve", lambda: 1, compensate="not callable")

    with pytest.raises(DurableUsageError, match="compensate"):
        durable_env.run(body, id="wf-saga-bad")
