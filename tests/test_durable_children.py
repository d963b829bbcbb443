"""``step.workflow``: a child run (its own id, row and lease) as one step of its parent,
stored as awaitly 1.35 stores it; a completed child is not run again, a crashed one
resumes with its parent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from durable_harness import Env, Form, workflow

from sqlalchemy_awaitly.durable import (
    ConcurrentExecution,
    DurableUsageError,
    Err,
    LeaseExpired,
    UnexpectedError,
)


class Crash(BaseException):
    """The process dying while the child runs."""


class Ran:
    def __init__(self) -> None:
        self.steps: list[str] = []

    def step(self, key: str, answer: Any) -> Any:
        def run() -> Any:
            self.steps.append(key)
            if isinstance(answer, BaseException):
                raise answer
            return answer

        return key, run


def stop() -> Any:
    return Err("STOP")  # a later failing step keeps the parent's row to look at


def test_a_child_s_value_is_the_step_s_stored_as_awaitly_stores_it(durable_env: Env) -> None:
    ran = Ran()

    def child(deps: Any) -> Any:
        a = yield ran.step("c1", deps["n"])
        b = yield ran.step("c2", a + 1)
        return {"total": b}

    def parent(deps: Any) -> Any:
        got = yield Form("workflow", workflow(child, durable_env.flavour), key="sub", deps={"n": 1})
        assert got == {"total": 2}
        yield "stop", stop

    assert durable_env.run(parent, id="parent") == Err("STOP")
    row = json.loads(durable_env.row("parent") or "{}")
    assert row["steps"]["sub"] == {"ok": True, "value": {"total": 2}}
    assert durable_env.row("parent:sub") is None  # the child succeeded: its row went
    durable_env.run(parent, id="parent")
    assert ran.steps == ["c1", "c2"]  # the parent replayed the child's step


def test_a_failed_child_fails_its_step_as_awaitly_stores_it(durable_env: Env) -> None:
    def child(deps: Any) -> Any:
        yield "c1", lambda: Err({"type": "CHILD_FAILED"})

    def parent(deps: Any) -> Any:
        yield Form("workflow", workflow(child, durable_env.flavour), key="sub", id="kid-7")

    assert durable_env.run(parent, id="parent-err") == Err({"type": "CHILD_FAILED"})
    row = json.loads(durable_env.row("parent-err") or "{}")
    assert row["steps"]["sub"] == {
        "ok": False,
        "error": {"type": "CHILD_FAILED"},
        "cause": {
            "type": "thrown",
            "originalType": "undefined",
            "stringRepresentation": "undefined",
        },
        "meta": {"origin": "result"},
    }
    assert json.loads(durable_env.row("kid-7") or "{}")["steps"]["c1"]["ok"] is False


def test_a_child_that_ended_before_its_parent_s_checkpoint_is_not_run_again(
    durable_env: Env,
) -> None:
    # The parent loses its lease as the child ends: its checkpoint of the child's
    # step is refused, as if it had died in between. Its rerun gets the child's
    # result from the child's idempotency record.
    ran = Ran()
    thief = '{"ownerToken":"thief"}'
    stolen = [False]

    def steal_sync() -> Any:
        if not stolen[0]:
            stolen[0] = True
            durable_env.kv.set("workflow:lock:parent-gap", thief, 60)
        return "stolen"

    async def steal_async() -> Any:  # the loop is running: the async store itself
        if not stolen[0]:
            stolen[0] = True
            written = durable_env.store.set("workflow:lock:parent-gap", thief, 60)
            if written is not None:
                await written
        return "stolen"

    def child(deps: Any) -> Any:
        yield ran.step("c1", 1)
        yield "steal", steal_sync if durable_env.flavour == "sync" else steal_async
        return "child-done"

    def parent(deps: Any) -> Any:
        got = yield Form("workflow", workflow(child, durable_env.flavour), key="sub")
        assert got == "child-done"
        yield "stop", stop

    first = durable_env.run(parent, id="parent-gap")
    assert isinstance(first, Err) and isinstance(first.error, LeaseExpired)
    assert "sub" not in json.loads(durable_env.row("parent-gap") or '{"steps": {}}')["steps"]
    durable_env.kv.delete("workflow:lock:parent-gap")  # as the thief's expiry would
    assert durable_env.run(parent, id="parent-gap") == Err("STOP")
    assert ran.steps == ["c1"]  # the child ran once


def test_a_child_that_crashed_resumes_with_its_parent(durable_env: Env) -> None:
    ran = Ran()
    crashing = [True]

    def second() -> Any:
        if crashing[0]:
            crashing[0] = False
            raise Crash()
        ran.steps.append("c2")
        return 2

    def child(deps: Any) -> Any:
        yield ran.step("c1", 1)
        yield "c2", second
        return "child-done"

    def parent(deps: Any) -> Any:
        yield ran.step("p1", "before")
        got = yield Form("workflow", workflow(child, durable_env.flavour), key="sub")
        assert got == "child-done"
        yield "stop", stop

    with pytest.raises(Crash):
        durable_env.run(parent, id="parent-crash")
    assert durable_env.run(parent, id="parent-crash") == Err("STOP")
    assert ran.steps == ["p1", "c1", "c2"]  # nothing ran twice


def test_a_child_that_cannot_run_ends_the_parent_without_a_record(durable_env: Env) -> None:
    held = '{"ownerToken":"someone-else"}'
    durable_env.kv.set("workflow:lock:parent-busy:sub", held, 60)

    def child(deps: Any) -> Any:
        yield "c1", lambda: 1

    def parent(deps: Any) -> Any:
        yield Form("workflow", workflow(child, durable_env.flavour), key="sub", lease_ttl=0.3)
        yield "stop", stop

    from fake_clock import FakeClock

    result = durable_env.run(parent, id="parent-busy", clock=FakeClock())
    assert isinstance(result, Err) and isinstance(result.error, ConcurrentExecution)
    assert durable_env.row("parent-busy") is None  # the child's step was not recorded


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (("not a workflow",), {}),
        ((lambda step, deps: 1,), {"store": None}),
        ((lambda step, deps: 1,), {"id": "parent-bad"}),
        ((lambda step, deps: 1,), {"id": ""}),
    ],
)
def test_a_bad_child_is_a_usage_error_of_the_run(
    durable_env: Env, args: tuple[Any, ...], options: dict[str, Any]
) -> None:
    def parent(deps: Any) -> Any:
        yield Form("workflow", *args, key="sub", **options)

    with pytest.raises(DurableUsageError):
        durable_env.run(parent, id="parent-bad")


def test_a_child_raising_is_the_step_s_unexpected_error(durable_env: Env) -> None:
    def child(deps: Any) -> Any:
        yield "c1", lambda: 1
        raise ValueError("child bug")

    def parent(deps: Any) -> Any:
        yield Form("workflow", workflow(child, durable_env.flavour), key="sub")

    result = durable_env.run(parent, id="parent-raise")
    assert isinstance(result, Err) and isinstance(result.error, UnexpectedError)
