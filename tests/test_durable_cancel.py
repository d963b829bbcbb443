"""Cancelling a run with a ``CancelToken``: it stops before its next step with awaitly's
``WORKFLOW_CANCELLED``, its row is kept and marked, it is listed as cancelled, and a
later run is refused until ``uncancel``; stopping is not cancelling."""

from __future__ import annotations

import json
from typing import Any

import pytest
from durable_harness import Env, With

from sqlalchemy_awaitly import durable
from sqlalchemy_awaitly.durable import CancelToken, Err, RunState, WorkflowCancelled


class Steps:
    def __init__(self) -> None:
        self.ran: list[str] = []

    def __call__(self, key: str, answer: Any = None, then: Any = None) -> Any:
        def run() -> Any:
            self.ran.append(key)
            if then is not None:
                then()
            return answer if answer is not None else key

        return key, run


def cancelled_in_row(env: Env, workflow_id: str) -> dict[str, Any]:
    raw = env.row(workflow_id)
    assert raw is not None
    return dict(json.loads(raw)["metadata"]["sqlalchemyAwaitly"]["cancelled"])


def test_a_cancelled_run_stops_before_its_next_step_and_keeps_its_row(durable_env: Env) -> None:
    token, steps = CancelToken(), Steps()

    def body(deps: Any) -> Any:
        yield steps("s1")
        yield steps("s2", then=lambda: token.cancel("user asked"))
        yield steps("s3")

    result = durable_env.run(body, id="wf-cancel", cancel=token)
    assert isinstance(result, Err) and isinstance(result.error, WorkflowCancelled)
    assert result.error.type == "WORKFLOW_CANCELLED"
    assert (result.error.reason, result.error.last_step_key) == ("user asked", "s2")
    assert steps.ran == ["s1", "s2"]
    row = json.loads(durable_env.row("wf-cancel") or "{}")
    assert set(row["steps"]) == {"s1", "s2"}  # awaitly's steps, untouched
    mark = cancelled_in_row(durable_env, "wf-cancel")
    assert (mark["reason"], mark["lastStepKey"]) == ("user asked", "s2")


def test_a_cancelled_run_is_listed_and_never_resumed_by_accident(durable_env: Env) -> None:
    token, steps = CancelToken(), Steps()
    token.cancel()

    def body(deps: Any) -> Any:
        yield steps("s1")
        return "done"

    first = durable_env.run(body, id="wf-pre-cancelled", cancel=token)
    assert isinstance(first, Err) and isinstance(first.error, WorkflowCancelled)
    assert steps.ran == []
    [listed] = [r for r in durable_env.helper("list_pending") if r.id == "wf-pre-cancelled"]
    assert listed.state is RunState.CANCELLED
    again = durable_env.run(body, id="wf-pre-cancelled")  # no token: still refused
    assert isinstance(again, Err) and isinstance(again.error, WorkflowCancelled)
    assert steps.ran == []
    assert durable_env.helper("uncancel", "wf-pre-cancelled") is True
    assert durable_env.helper("uncancel", "wf-pre-cancelled") is False  # nothing to clear
    assert durable_env.run(body, id="wf-pre-cancelled").value == "done"  # resumed on purpose
    assert steps.ran == ["s1"]


def test_an_uncancelled_run_resumes_where_it_stopped(durable_env: Env) -> None:
    token, steps = CancelToken(), Steps()

    def body(deps: Any) -> Any:
        yield steps("s1", then=lambda: token.cancel())
        yield steps("s2")
        return "done"

    durable_env.run(body, id="wf-uncancel", cancel=token)
    durable_env.helper("uncancel", "wf-uncancel")
    assert durable_env.run(body, id="wf-uncancel").value == "done"
    assert steps.ran == ["s1", "s2"]  # s1 not again


def test_a_cancelled_run_compensates_nothing(durable_env: Env) -> None:
    token, undone = CancelToken(), []

    def body(deps: Any) -> Any:
        yield With("reserve", lambda: token.cancel() or 1, compensate=undone.append)
        yield "ship", lambda: 2

    result = durable_env.run(body, id="wf-cancel-saga", cancel=token)
    assert isinstance(result.error, WorkflowCancelled) and undone == []


def test_a_token_is_a_token() -> None:
    with pytest.raises(TypeError):
        durable.run(None, lambda step, deps: 1, id="wf-bad-token", cancel="stop")  # type: ignore[arg-type]
    token = CancelToken()
    token.cancel("first")
    token.cancel("second")
    assert token.cancelled and token.reason == "first"
    with pytest.raises(TypeError):
        CancelToken().cancel(42)  # type: ignore[arg-type]


def test_a_cancelled_asyncio_task_stops_the_run_without_cancelling_it() -> None:
    import asyncio

    from sqlalchemy_awaitly.durable import MemoryStore

    store, ran = MemoryStore(), []

    async def wf(step: Any, deps: Any) -> Any:
        await step(lambda: ran.append("s1") or 1, key="s1")
        await step(lambda: asyncio.sleep(60), key="long")
        return "done"

    async def main() -> None:
        task = asyncio.ensure_future(durable.run_async(None, wf, id="wf-task", store=store))
        while not ran:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), 10))
    [listed] = durable.list_pending(store)
    assert listed.state is RunState.CRASHED  # stopped, resumable: not cancelled


# --- from another process: durable.cancel ------------------------------------------


def cancel_from_elsewhere(env: Env, workflow_id: str, reason: str) -> Any:
    """A step that cancels its own run as another process would (its lease row)."""

    def sync() -> Any:
        assert durable.cancel(env.store, workflow_id, reason) is True
        return "asked"

    async def asynchronous() -> Any:
        assert await durable.cancel_async(env.store, workflow_id, reason) is True
        return "asked"

    return sync if env.flavour == "sync" else asynchronous


def test_a_run_cancelled_from_elsewhere_stops_before_its_next_step(durable_env: Env) -> None:
    steps = Steps()

    def body(deps: Any) -> Any:
        yield steps("s1")
        yield "ask", cancel_from_elsewhere(durable_env, "wf-remote", "operator")
        yield steps("s3")

    result = durable_env.run(body, id="wf-remote")
    assert isinstance(result, Err) and isinstance(result.error, WorkflowCancelled)
    assert (result.error.reason, result.error.last_step_key) == ("operator", "ask")
    assert steps.ran == ["s1"]
    row = json.loads(durable_env.row("wf-remote") or "{}")
    assert set(row["steps"]) == {"s1", "ask"}  # the step that was running kept its record
    assert cancelled_in_row(durable_env, "wf-remote")["reason"] == "operator"
    assert durable_env.kv.get("workflow:lock:wf-remote") is None  # released
    assert isinstance(durable_env.run(body, id="wf-remote").error, WorkflowCancelled)


def test_a_cancel_that_comes_as_the_run_ends_lets_it_end(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        yield "ask", cancel_from_elsewhere(durable_env, "wf-late", "too late")
        return "done"

    assert durable_env.run(body, id="wf-late").value == "done"
    assert durable_env.row("wf-late") is None
    assert durable_env.kv.get("workflow:lock:wf-late") is None


def test_a_long_step_cancelled_from_elsewhere_keeps_its_lease_and_its_record(
    durable_env: Env,
) -> None:
    # The heartbeat's renewal is refused first: it finds the mark and carries on.
    import asyncio
    import time

    steps = Steps()

    def slow_sync() -> Any:
        assert durable.cancel(durable_env.store, "wf-long", "stop") is True
        time.sleep(0.5)  # longer than a renewal interval
        return "slow"

    async def slow_async() -> Any:
        assert await durable.cancel_async(durable_env.store, "wf-long", "stop") is True
        await asyncio.sleep(0.5)
        return "slow"

    def body(deps: Any) -> Any:
        yield "slow", slow_sync if durable_env.flavour == "sync" else slow_async
        yield steps("after")

    result = durable_env.run(body, id="wf-long", lease_ttl=0.6, heartbeat_interval=0.1)
    assert isinstance(result, Err) and isinstance(result.error, WorkflowCancelled)
    assert steps.ran == []
    assert set(json.loads(durable_env.row("wf-long") or "{}")["steps"]) == {"slow"}


def test_a_stopped_run_is_marked_cancelled_at_once(durable_env: Env) -> None:
    steps = Steps()

    def body(deps: Any) -> Any:
        yield steps("s1")
        yield "fail", lambda: Err("BOOM")

    durable_env.run(body, id="wf-stopped")
    assert durable_env.helper("cancel", "wf-stopped", "no retries") is True
    [listed] = [r for r in durable_env.helper("list_pending") if r.id == "wf-stopped"]
    assert listed.state is RunState.CANCELLED
    result = durable_env.run(body, id="wf-stopped")
    assert isinstance(result.error, WorkflowCancelled) and result.error.reason == "no retries"
    assert durable_env.helper("cancel", "no-such-run") is False
