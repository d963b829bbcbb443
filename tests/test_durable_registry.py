"""A registry of workflows, and ``recover``: crashed runs resume with their registered
workflow and recorded input; everything else is left alone and reported."""

from __future__ import annotations

import json
from typing import Any

import pytest
from durable_harness import Env, workflow

from sqlalchemy_awaitly import durable
from sqlalchemy_awaitly.durable import Err, Ok, Recovery, Registry


class Crash(BaseException):
    """The process dying mid-run."""


def registered(env: Env, body: Any) -> Any:
    """``body(deps, input)`` (the harness's generator form) as ``fn(step, deps, input)``."""
    if env.flavour == "sync":

        def fn(step: Any, deps: Any, input: Any) -> Any:
            return workflow(lambda d: body(d, input), "sync")(step, deps)

        return fn

    async def afn(step: Any, deps: Any, input: Any) -> Any:
        return await workflow(lambda d: body(d, input), "async")(step, deps)

    return afn


def start(env: Env, registry: Registry, name: str, workflow_id: str, input: Any) -> Any:
    if env.flavour == "sync":
        return registry.start(env.store, name, id=workflow_id, input=input)
    call = registry.start_async(env.store, name, id=workflow_id, input=input)
    return env.loop.run_until_complete(call)


def recover(env: Env, registry: Registry, **options: Any) -> Recovery:
    if env.flavour == "sync":
        return durable.recover(env.store, registry, **options)
    return env.loop.run_until_complete(durable.recover_async(env.store, registry, **options))


class Orders:
    """A registered workflow that crashes once, where asked, and notes its steps."""

    def __init__(self, crash_in: str | None) -> None:
        self.crash_in = crash_in
        self.ran: list[str] = []
        self.deps_made = 0

    def deps(self) -> dict[str, int]:
        self.deps_made += 1
        return {"tax": 2}

    def step(self, key: str, value: Any) -> Any:
        def run() -> Any:
            if self.crash_in == key:
                self.crash_in = None
                raise Crash()
            self.ran.append(key)
            return value

        return key, run

    def body(self, deps: Any, input: Any) -> Any:
        price = yield self.step("price", input["qty"] * 10)
        total = yield self.step("total", price * deps["tax"])
        return {"order": input["order"], "total": total}


def registry_of(env: Env, orders: Orders, version: int = 1) -> Registry:
    registry = Registry()
    registry.register("order", registered(env, orders.body), version=version, deps=orders.deps)
    return registry


def test_a_run_that_died_before_its_first_step_is_found_and_resumed(durable_env: Env) -> None:
    orders = Orders(crash_in="price")
    registry = registry_of(durable_env, orders)
    with pytest.raises(Crash):
        start(durable_env, registry, "order", "order-1", {"order": 1, "qty": 3})
    row = json.loads(durable_env.row("order-1") or "{}")
    assert row["steps"] == {}  # written at the start, before any step
    assert row["metadata"]["sqlalchemyAwaitly"]["workflow"] == {
        "type": "order",
        "version": 1,
        "input": {"order": 1, "qty": 3},
    }
    found = recover(durable_env, registry)
    assert found.resumed == {"order-1": Ok({"order": 1, "total": 60})}
    assert orders.ran == ["price", "total"] and orders.deps_made == 2
    assert durable_env.row("order-1") is None  # done: its row went


def test_a_run_that_died_half_way_resumes_without_repeating_its_steps(durable_env: Env) -> None:
    orders = Orders(crash_in="total")
    registry = registry_of(durable_env, orders)
    with pytest.raises(Crash):
        start(durable_env, registry, "order", "order-2", {"order": 2, "qty": 1})
    found = recover(durable_env, registry)
    assert found.resumed == {"order-2": Ok({"order": 2, "total": 20})}
    assert orders.ran == ["price", "total"]  # price once


def test_what_recovery_leaves_alone_it_reports(durable_env: Env) -> None:
    orders = Orders(crash_in="price")
    registry = registry_of(durable_env, orders)
    with pytest.raises(Crash):
        start(durable_env, registry, "order", "order-v1", {"order": 3, "qty": 1})
    newer = registry_of(durable_env, Orders(None), version=2)  # only version 2 known
    # A crashed run not started through a registry, a failed one, a cancelled one.
    with pytest.raises(Crash):
        durable_env.run(lambda deps: _crashing(), id="plain")
    failing = Orders(None)
    failing_registry = Registry()

    def fails(deps: Any, input: Any) -> Any:
        yield "boom", lambda: Err("BOOM")

    failing_registry.register("order", registered(durable_env, fails))
    start(durable_env, failing_registry, "order", "order-failed", {})
    found = recover(durable_env, newer)
    assert found.resumed == {} and found.skipped == []
    assert found.unknown == {"order-v1": 'no registered workflow {"type": "order", "version": 1}'}
    assert found.unregistered == ["plain"]
    assert failing.ran == [] and durable_env.row("order-failed") is not None
    assert durable_env.row("order-v1") is not None  # untouched


def _crashing() -> Any:
    yield "a", lambda: 1
    raise Crash()


def test_a_run_another_process_resumed_first_is_skipped(durable_env: Env) -> None:
    orders = Orders(crash_in="price")
    registry = registry_of(durable_env, orders)
    with pytest.raises(Crash):
        start(durable_env, registry, "order", "order-raced", {"order": 4, "qty": 1})
    first_deps = orders.deps

    other = '{"ownerToken":"other"}'

    def deps_while_another_takes_it() -> dict[str, int]:
        # Another worker takes the lease between this one's listing and its run.
        durable_env.kv.set("workflow:lock:order-raced", other, 60)
        return first_deps()

    async def deps_while_another_takes_it_async() -> dict[str, int]:
        written = durable_env.store.set("workflow:lock:order-raced", other, 60)
        if written is not None:
            await written
        return first_deps()

    factory: Any = deps_while_another_takes_it
    if durable_env.flavour == "async":
        factory = deps_while_another_takes_it_async
    raced = Registry()
    raced.register("order", registered(durable_env, orders.body), deps=factory)
    found = recover(durable_env, raced)
    assert found.skipped == ["order-raced"] and found.resumed == {}
    assert orders.ran == []  # never run twice


def test_recover_resumes_at_most_limit_runs(durable_env: Env) -> None:
    orders = Orders(None)
    registry = registry_of(durable_env, orders)
    for n in range(3):
        orders.crash_in = "price"
        with pytest.raises(Crash):
            start(durable_env, registry, "order", f"order-many-{n}", {"order": n, "qty": 1})
    assert len(recover(durable_env, registry, limit=2).resumed) == 2
    assert len(recover(durable_env, registry).resumed) == 1


def test_registering_is_checked() -> None:
    registry = Registry()

    @registry.workflow("order", version=1)
    def order(step: Any, deps: Any, input: Any) -> Any:
        return input

    with pytest.raises(durable.DurableUsageError, match="registered already"):
        registry.register("order", order)
    with pytest.raises(durable.DurableUsageError):
        registry.register("", order)
    with pytest.raises(durable.DurableUsageError):
        registry.start(durable.MemoryStore(), "missing", id="x")
    with pytest.raises(durable.UnsupportedValueError):
        registry.start(durable.MemoryStore(), "order", id="x", input={1, 2})
    assert registry.start(durable.MemoryStore(), "order", id="x", input=[1]) == Ok([1])
