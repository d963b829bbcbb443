"""The recovery Worker and the StopToken, in this process: crashed runs are resumed
once each, what cannot be resumed is reported once and left alone, and a stop
leaves runs resumable (the process-level tests are in test_worker_process.py)."""

from __future__ import annotations

import asyncio
import faulthandler
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from durable_harness import Env

from sqlalchemy_awaitly import AsyncSQLAlchemyKeyValueStore, SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import (
    Err,
    MemoryStore,
    Ok,
    Outcome,
    Registry,
    Resumption,
    RunState,
    StopToken,
    Worker,
    WorkflowStopped,
)
from sqlalchemy_awaitly.durable.errors import DurableUsageError

BOUND = 30.0  # seconds any wait may take before the test fails


class Crash(BaseException):
    """The process dying mid-run."""


def wait_until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not done():
        if time.monotonic() > deadline:
            faulthandler.dump_traceback(sys.stderr, all_threads=True)  # where it is stuck
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Shop:
    """Registered workflows that note each step they run, crashing where asked."""

    def __init__(self) -> None:
        self.ran: Counter[tuple[str, str]] = Counter()
        self.crash_at: str | None = None
        self.lock = threading.Lock()
        self.registry = Registry()
        self.registry.register("order", self.order)

    def note(self, workflow_id: str, key: str) -> None:
        if self.crash_at == key:
            raise Crash()
        with self.lock:
            self.ran[(workflow_id, key)] += 1

    def order(self, step: Any, deps: Any, input: dict[str, Any]) -> Any:
        i = input["id"]
        price = step(lambda: self.note(i, "price") or input["qty"] * 10, key="price")
        return step(lambda: self.note(i, "total") or price + 1, key="total")

    def crashed(self, store: object, workflow_id: str, at: str = "total") -> None:
        """Start a run that dies in step ``at``."""
        self.crash_at = at
        try:
            with pytest.raises(Crash):
                self.registry.start(
                    store, "order", id=workflow_id, input={"id": workflow_id, "qty": 1}
                )
        finally:
            self.crash_at = None


@pytest.fixture(params=["memory", "postgresql", "sqlite"])
def stores(
    request: pytest.FixtureRequest, table_name: str, sqlite_url: str
) -> Iterator[Callable[[], Any]]:
    """Stores on one table: each call another (its own engine), as processes have."""
    if request.param == "memory":
        memory = MemoryStore()
        yield lambda: memory
        return
    url = request.getfixturevalue("postgres").url if request.param == "postgresql" else sqlite_url
    made: list[SQLAlchemyKeyValueStore] = []

    def another() -> SQLAlchemyKeyValueStore:
        made.append(SQLAlchemyKeyValueStore(url, table_name=table_name))
        return made[-1]

    yield another
    for store in made:
        store.close()


class Running:
    """A Worker on a thread of its own, with what it reported."""

    def __init__(self, worker_of: Callable[..., Worker], **options: Any) -> None:
        self.heard: list[Resumption] = []
        self.worker = worker_of(on_resumption=self.heard.append, poll_interval=0.02, **options)
        self.totals: durable.Recovery | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.totals = self.worker.run()

    def stop(self) -> durable.Recovery:
        self.worker.stop()
        self.thread.join(BOUND)
        assert not self.thread.is_alive(), "the worker did not stop"
        assert self.totals is not None
        return self.totals


def test_the_worker_resumes_crashed_runs_once_each(stores: Callable[[], Any]) -> None:
    store, shop = stores(), Shop()
    for n in range(5):
        shop.crashed(store, f"order-{n}", at="total" if n % 2 else "price")
    running = Running(lambda **o: Worker(store, shop.registry, concurrency=3, **o))
    wait_until(lambda: len(running.heard) == 5, "five runs resumed")
    time.sleep(0.1)  # a few more polls: nothing is resumed again
    totals = running.stop()
    assert totals.resumed == {f"order-{n}": Ok(11) for n in range(5)}
    assert [h.outcome for h in running.heard] == [Outcome.RESUMED] * 5
    assert set(shop.ran.values()) == {1}  # each step of each run once
    assert durable.list_pending(store) == []


def test_what_the_worker_cannot_resume_it_reports_once_and_leaves(
    stores: Callable[[], Any],
) -> None:
    store, shop = stores(), Shop()
    shop.crashed(store, "order-known")
    other = Shop()
    other.registry = Registry()
    other.registry.register("order", other.order, version=2)
    other.crashed(store, "order-v2")  # a version this worker does not know
    with pytest.raises(Crash):

        def plain(step: Any, deps: Any) -> Any:
            step(lambda: 1, key="a")
            raise Crash()

        durable.run(None, plain, id="plain", store=store)
    failing = Registry()
    failing.register("order", lambda step, deps, input: step(lambda: Err("NO"), key="price"))
    assert failing.start(store, "order", id="order-failed", input={}) == Err("NO")
    shop.crashed(store, "order-cancelled")
    assert durable.cancel(store, "order-cancelled", "not wanted")

    running = Running(lambda **o: Worker(store, shop.registry, **o))
    wait_until(lambda: len(running.heard) == 3, "three runs dealt with")
    time.sleep(0.1)  # more polls: nothing reported twice
    totals = running.stop()
    outcomes = {h.workflow_id: h.outcome for h in running.heard}
    assert len(running.heard) == 3
    assert outcomes == {
        "order-known": Outcome.RESUMED,
        "order-v2": Outcome.UNKNOWN,
        "plain": Outcome.UNREGISTERED,
    }
    assert totals.unknown == {"order-v2": 'no registered workflow {"type": "order", "version": 2}'}
    states = {run.id: run.state for run in durable.list_pending(store)}
    assert states == {
        "order-v2": RunState.CRASHED,
        "plain": RunState.CRASHED,
        "order-failed": RunState.FAILED,
        "order-cancelled": RunState.CANCELLED,
    }


def test_a_workflow_that_raises_on_resumption_is_reported_and_left(
    stores: Callable[[], Any],
) -> None:
    store, shop = stores(), Shop()
    shop.crashed(store, "order-deps")
    broken = Registry()

    def no_deps() -> Any:
        raise RuntimeError("the payment service is not configured")

    broken.register("order", shop.order, deps=no_deps)
    running = Running(lambda **o: Worker(store, broken, **o))
    wait_until(lambda: len(running.heard) == 1, "the failure reported")
    time.sleep(0.1)
    totals = running.stop()
    assert totals.errors == {"order-deps": "RuntimeError: the payment service is not configured"}
    assert len(running.heard) == 1  # not tried at every poll
    assert [r.state for r in durable.list_pending(store)] == [RunState.CRASHED]


def test_two_workers_racing_run_each_crashed_run_once(stores: Callable[[], Any]) -> None:
    shop = Shop()
    setup = stores()
    ids = [f"order-{n}" for n in range(20)]
    for workflow_id in ids:
        shop.crashed(setup, workflow_id, at="price")
    first = Running(lambda **o: Worker(stores(), shop.registry, concurrency=4, **o))
    second = Running(lambda **o: Worker(stores(), shop.registry, concurrency=4, **o))
    wait_until(lambda: durable.list_pending(setup) == [], "every run finished")
    a, b = first.stop(), second.stop()
    assert set(a.resumed) | set(b.resumed) == set(ids)
    assert not set(a.resumed) & set(b.resumed)
    assert shop.ran == Counter({(i, key): 1 for i in ids for key in ("price", "total")})


def test_a_run_ended_elsewhere_after_it_was_listed_is_not_started_again(
    stores: Callable[[], Any],
) -> None:
    store, shop = stores(), Shop()
    shop.crashed(store, "order-gone", at="price")
    late = Registry()

    def deps_once_another_worker_ended_it() -> None:
        assert durable.delete_state(store, "order-gone")  # as its end deletes the row

    late.register("order", shop.order, deps=deps_once_another_worker_ended_it)
    found = durable.recover(store, late)
    assert found.skipped == ["order-gone"] and found.resumed == {}
    assert shop.ran == Counter()  # not run again from its start
    assert not durable.has_state(store, "order-gone")


def test_a_stopped_worker_lets_the_running_step_finish_and_leaves_the_run_resumable(
    stores: Callable[[], Any],
) -> None:
    store, shop = stores(), Shop()
    started, finish = threading.Event(), threading.Event()
    slow = Registry()

    def order(step: Any, deps: Any, input: Any) -> Any:
        def price() -> int:
            started.set()
            assert finish.wait(BOUND)
            shop.note("order-slow", "price")
            return 10

        value = step(price, key="price")
        return step(lambda: shop.note("order-slow", "total") or value + 1, key="total")

    slow.register("order", order)
    shop.crashed(store, "order-slow", at="price")  # the Shop's workflow: same keys
    running = Running(lambda **o: Worker(store, slow, **o))
    assert started.wait(BOUND)
    running.worker.stop()
    finish.set()
    totals = running.stop()
    assert totals.stopped == ["order-slow"] and totals.resumed == {}
    stopped = running.heard[0].result
    assert isinstance(stopped, Err) and isinstance(stopped.error, WorkflowStopped)
    assert stopped.error.last_step_key == "price"
    [run] = durable.list_pending(store)
    assert (run.state, run.steps) == (RunState.CRASHED, 1)  # the step kept, no lease
    assert shop.ran == Counter({("order-slow", "price"): 1})
    again = Running(lambda **o: Worker(store, shop.registry, **o))
    wait_until(lambda: len(again.heard) == 1, "the stopped run resumed")
    assert again.stop().resumed == {"order-slow": Ok(11)}
    assert shop.ran == Counter({("order-slow", "price"): 1, ("order-slow", "total"): 1})


def test_a_stop_before_the_worker_starts_a_queued_run_leaves_it_alone(
    stores: Callable[[], Any],
) -> None:
    store, shop = stores(), Shop()
    for n in range(3):
        shop.crashed(store, f"order-{n}", at="price")
    entered, gate = threading.Event(), threading.Event()
    blocking = Registry()

    def order(step: Any, deps: Any, input: Any) -> Any:
        entered.set()
        gate.wait(BOUND)
        return shop.order(step, deps, input)

    blocking.register("order", order)
    running = Running(lambda **o: Worker(store, blocking, concurrency=1, **o))
    assert entered.wait(BOUND)  # one run started, the other two queued behind it
    wait_until(lambda: running.worker.running == 3, "three runs queued")
    running.worker.stop()
    gate.set()
    totals = running.stop()
    assert len(totals.stopped) == 1 and totals.resumed == {}  # the two queued never started
    assert {r.state for r in durable.list_pending(store)} == {RunState.CRASHED}
    assert shop.ran == Counter()


def test_the_worker_resumes_asyncio_workflows_on_an_asyncio_store(
    table_name: str, sqlite_url: str
) -> None:
    ran: Counter[str] = Counter()
    registry = Registry()
    crash = {"on": True}

    async def order(step: Any, deps: Any, input: Any) -> Any:
        async def price() -> int:
            if crash["on"]:
                raise Crash()
            ran[input["id"]] += 1
            await asyncio.sleep(0)
            return 10

        return await step(price, key="price")

    registry.register("order", order)
    made: list[AsyncSQLAlchemyKeyValueStore] = []

    def async_store() -> AsyncSQLAlchemyKeyValueStore:
        made.append(AsyncSQLAlchemyKeyValueStore(sqlite_url, table_name=table_name))
        return made[-1]

    async def crashed() -> None:
        store = async_store()
        try:
            for n in range(3):
                with pytest.raises(Crash):
                    await registry.start_async(store, "order", id=f"a-{n}", input={"id": n})
        finally:
            await store.close()

    asyncio.run(crashed())
    crash["on"] = False
    store = SQLAlchemyKeyValueStore(sqlite_url, table_name=table_name)
    try:
        running = Running(lambda **o: Worker(store, registry, async_store=async_store, **o))
        wait_until(lambda: len(running.heard) == 3, "three asyncio runs resumed")
        totals = running.stop()
    finally:
        store.close()
    assert totals.resumed == {f"a-{n}": Ok(10) for n in range(3)}
    assert ran == Counter({0: 1, 1: 1, 2: 1})


def test_a_worker_without_an_asyncio_store_reports_an_asyncio_workflow() -> None:
    memory, registry = MemoryStore(), Registry()

    async def order(step: Any, deps: Any, input: Any) -> Any:
        return await step(lambda: 1, key="a")

    registry.register("order", order)
    memory.set("workflow:state:x", _registered_row("order"))
    running = Running(lambda **o: Worker(memory, registry, **o))
    wait_until(lambda: len(running.heard) == 1, "the run reported")
    totals = running.stop()
    assert "is async: give the Worker an async_store factory" in totals.errors["x"]


def _registered_row(type_name: str) -> str:
    """A run's row as a registered start leaves it, before its first step."""
    from sqlalchemy_awaitly.wire.documents import to_json

    workflow = {"type": type_name, "version": 1, "input": None}
    return to_json(
        {
            "formatVersion": 1,
            "steps": {},
            "execution": {"status": "running", "lastUpdated": "2026-01-01T00:00:00.000Z"},
            "metadata": {"sqlalchemyAwaitly": {"workflow": workflow}},
        }
    )


@pytest.mark.parametrize(
    "options",
    [{"concurrency": 0}, {"concurrency": True}, {"poll_interval": 0}, {"stop": StopToken()}],
)
def test_a_worker_refuses_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(DurableUsageError):
        Worker(MemoryStore(), Registry(), **options)


# --- the StopToken on durable.run ---------------------------------------------------


def test_a_stopped_run_ends_before_its_next_step_and_resumes_later(durable_env: Env) -> None:
    token, ran = StopToken(), []

    def body(deps: Any) -> Any:
        a = yield "a", lambda: ran.append("a") or 1
        b = yield "b", lambda: token.stop() or ran.append("b") or 2
        c = yield "c", lambda: ran.append("c") or 3
        return a + b + c

    result = durable_env.run(body, id="stopped", stop=token)
    assert isinstance(result, Err) and isinstance(result.error, WorkflowStopped)
    assert result.error.type == "WORKFLOW_STOPPED" and result.error.last_step_key == "b"
    assert "not cancelled" in result.error.message
    assert durable_env.kv.get("workflow:lock:stopped") is None  # the lease released
    [run] = durable_env.helper("list_pending")
    assert (run.state, run.steps) == (RunState.CRASHED, 2)  # no mark: resumable
    assert durable_env.run(body, id="stopped") == Ok(6)
    assert ran == ["a", "b", "c"]


def test_a_stop_token_is_checked(durable_env: Env) -> None:
    with pytest.raises(TypeError, match=r"durable\.StopToken"):
        durable_env.run(lambda deps: iter(()), id="x", stop=threading.Event())


def test_a_reporting_callback_that_raises_does_not_stop_the_worker() -> None:
    store, shop = MemoryStore(), Shop()
    for n in range(3):
        shop.crashed(store, f"order-{n}")
    heard: list[str] = []

    def flaky(done: Resumption) -> None:
        heard.append(done.workflow_id)
        raise RuntimeError("the dashboard is down")

    worker = Worker(store, shop.registry, concurrency=1, poll_interval=0.02, on_resumption=flaky)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    wait_until(lambda: len(heard) == 3, "three runs reported")
    worker.stop()
    thread.join(BOUND)
    assert sorted(heard) == ["order-0", "order-1", "order-2"]
    assert len(worker.totals.resumed) == 3 and durable.list_pending(store) == []
