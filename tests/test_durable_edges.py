"""Edges of the runner: misuse, mutation, concurrency inside a run, fencing, exhaustion."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from typing import Any

import pytest
from conftest import drop_table
from durable_harness import Env, Tx
from sqlalchemy import create_engine, text

from sqlalchemy_awaitly import InvalidInputError, SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import (
    ConcurrentExecution,
    DurableUsageError,
    Err,
    MemoryStore,
    Ok,
    PersistenceFailed,
    VersionMismatch,
)

ASYNC = pytest.mark.parametrize(
    "durable_env", ["memory-async", "postgresql-async", "sqlite-async"], indirect=True
)
SYNC = pytest.mark.parametrize(
    "durable_env", ["memory-sync", "postgresql-sync", "sqlite-sync"], indirect=True
)
SYNC_DATABASES = pytest.mark.parametrize(
    "durable_env", ["postgresql-sync", "sqlite-sync"], indirect=True
)


def stored_steps(env: Env, workflow_id: str) -> dict[str, Any]:
    raw = env.row(workflow_id)
    return {} if raw is None else json.loads(raw)["steps"]


def test_run_refuses_an_async_workflow_and_keeps_the_state() -> None:
    store = MemoryStore()
    durable.run(None, lambda step, deps: step(lambda: Err("x"), key="a"), id="w", store=store)
    before = store.get("workflow:state:w")

    async def workflow(step: Any, deps: Any) -> Any:
        return 1

    with pytest.raises(DurableUsageError, match="run_async"):
        durable.run(None, workflow, id="w", store=store)
    assert store.get("workflow:state:w") == before


def test_mutating_a_returned_value_does_not_change_its_record(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        user = yield "a", lambda: {"name": "Alice", "tags": []}
        user["tags"].append("changed later")
        user["when"] = object()  # would not even be JSON
        yield "b", lambda: Err("stop")

    durable_env.run(body, id="mutated")
    assert stored_steps(durable_env, "mutated")["a"] == {
        "ok": True,
        "value": {"name": "Alice", "tags": []},
    }
    replayed: list[Any] = []

    def again(deps: Any) -> Any:
        user = yield "a", lambda: None
        replayed.append(user)
        user["tags"].append("x")
        yield "b", lambda: None

    durable_env.run(again, id="mutated")
    assert stored_steps(durable_env, "mutated")["a"]["value"]["tags"] == []


@ASYNC
def test_gathered_steps_all_reach_the_checkpoint(durable_env: Env) -> None:
    async def workflow(step: Any, deps: Any) -> Any:
        async def slow(i: int) -> int:
            await asyncio.sleep(0.01 * (5 - i))
            return i

        await asyncio.gather(*(step(lambda i=i: slow(i), key=f"s{i}") for i in range(5)))
        await step(lambda: Err("stop"), key="last")

    result = durable_env.loop.run_until_complete(
        durable.run_async(None, workflow, id="gathered", store=durable_env.store)
    )
    assert result == Err("stop", None)
    assert sorted(stored_steps(durable_env, "gathered")) == ["last", "s0", "s1", "s2", "s3", "s4"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup is Python 3.11+")
def test_a_step_failing_inside_a_task_group_is_the_run_s_err() -> None:
    async def workflow(step: Any, deps: Any) -> Any:
        async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
            group.create_task(step(lambda: Err("DECLINED"), key="charge"))
        return "unreachable"

    store = MemoryStore()
    assert asyncio.run(durable.run_async(None, workflow, id="tg", store=store)) == Err(
        "DECLINED", None
    )


@ASYNC
def test_an_interrupted_step_may_be_retried_in_the_same_run(durable_env: Env) -> None:
    attempts: list[int] = []

    async def workflow(step: Any, deps: Any) -> Any:
        async def flaky() -> str:
            attempts.append(1)
            if len(attempts) == 1:
                await asyncio.sleep(10)
            return "done"

        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(step(flaky, key="call"), 0.05)
        return await step(flaky, key="call")

    result = durable_env.loop.run_until_complete(
        durable.run_async(None, workflow, id="retry-in-run", store=durable_env.store)
    )
    assert result == Ok("done") and len(attempts) == 2


def test_an_exception_message_with_a_lone_surrogate_is_recorded(durable_env: Env) -> None:
    def boom() -> Any:
        raise ValueError("bad \ud800 byte")

    def body(deps: Any) -> Any:
        yield "a", boom

    result = durable_env.run(body, id="surrogate")
    assert isinstance(result, Err) and isinstance(result.cause, ValueError)
    assert stored_steps(durable_env, "surrogate")["a"]["cause"]["message"] == "bad \\ud800 byte"


@SYNC
def test_one_idempotency_key_runs_once_when_callers_race(durable_env: Env) -> None:
    ran: list[int] = []
    gate = threading.Barrier(4)

    def workflow(step: Any, deps: Any) -> Any:
        return step(lambda: ran.append(1) or "charged", key="charge")

    results: list[Any] = []

    def call(i: int) -> None:
        gate.wait()
        results.append(
            durable.run(None, workflow, id=f"caller-{i}", store=durable_env.store,
                        idempotency_key="pay-1")
        )  # fmt: skip

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ran) == 1
    for result in results:
        assert result == Ok("charged") or (
            isinstance(result, Err) and isinstance(result.error, ConcurrentExecution)
        )


def test_a_runner_error_frees_the_idempotency_key(durable_env: Env) -> None:
    durable_env.run(lambda deps: (yield "a", lambda: Err("x")), id="v", version=1)
    result = durable_env.run(
        lambda deps: (yield "a", lambda: 1), id="v", version=2, idempotency_key="k-v"
    )
    assert isinstance(result, Err) and isinstance(result.error, VersionMismatch)
    assert durable_env.kv.get("workflow:state:idem:k-v") is None


def test_overlapping_prefixes_are_refused(durable_env: Env) -> None:
    with pytest.raises(InvalidInputError, match="overlap"):
        durable_env.run(lambda deps: (yield "a", lambda: 1), id="p", lock_prefix="workflow:")


@SYNC_DATABASES
def test_a_stolen_lease_rolls_back_a_transactional_step(durable_env: Env) -> None:
    engine = durable_env.store.engine
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS fenced (n int)"))
        conn.execute(text("DELETE FROM fenced"))

    def steal_then_write(conn: Any) -> Any:
        durable_env.kv.set("workflow:lock:fenced", '{"ownerToken":"thief"}', 60)
        conn.execute(text("INSERT INTO fenced VALUES (1)"))
        return "written"

    def body(deps: Any) -> Any:
        yield Tx("write", steal_then_write)

    result = durable_env.run(body, id="fenced")
    assert isinstance(result, Err) and result.error.type == "LEASE_EXPIRED"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM fenced")).scalar() == 0
    assert durable_env.row("fenced") is None
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE fenced"))


@SYNC_DATABASES
def test_a_transactional_step_may_not_commit_by_itself(durable_env: Env) -> None:

    def commits(conn: Any) -> Any:
        conn.commit()
        return 1

    with pytest.raises(DurableUsageError, match="must not commit"):
        durable_env.run(lambda deps: (yield Tx("c", commits)), id="self-commit")


def test_transactional_steps_get_a_connection_when_the_pool_is_small(postgres: Any) -> None:
    store = SQLAlchemyKeyValueStore(
        postgres.url, table_name="t_small_pool",
        pool={"pool_size": 1, "max_overflow": 0, "pool_timeout": 3},
    )  # fmt: skip
    try:

        def workflow(step: Any, deps: Any) -> Any:
            step(lambda: 1, key="plain")  # the store keeps its one connection
            return step.transaction(lambda conn: conn.execute(text("SELECT 2")).scalar(), key="tx")

        assert durable.run(None, workflow, id="small", store=store) == Ok(2)
    finally:
        store.close()
        engine = create_engine(postgres.url)
        drop_table(engine, "t_small_pool")
        engine.dispose()


def test_inputs_compare_as_javascript_sees_them(durable_env: Env) -> None:
    def body(deps: Any) -> Any:
        return (yield "a", lambda: "done")

    options = {"idempotency_key": "js", "input": {"amount": 1.0, "items": [2.0]}}
    assert durable_env.run(body, id="js-1", **options) == Ok("done")
    again = {"idempotency_key": "js", "input": {"items": [2], "amount": 1}}
    assert durable_env.run(body, id="js-2", **again) == Ok("done")


def test_subclasses_json_would_flatten_are_refused(durable_env: Env) -> None:
    import enum

    class Color(str, enum.Enum):
        RED = "red"

    with pytest.raises(DurableUsageError, match="a Color"):
        durable_env.run(lambda deps: (yield "a", lambda: Color.RED), id="enum")


@SYNC
def test_a_swallowed_usage_error_still_ends_the_run(durable_env: Env) -> None:
    ran: list[str] = []

    def workflow(step: Any, deps: Any) -> Any:
        step(lambda: 1, key="a")
        with contextlib.suppress(DurableUsageError):  # the workflow hides its own bug
            step(lambda: 2, key="a")
        step(lambda: ran.append("b"), key="b")

    with pytest.raises(DurableUsageError, match="used twice"):
        durable.run(None, workflow, id="swallowed", store=durable_env.store)
    assert ran == []


class CallLog(MemoryStore):
    """The store calls a run makes, and whether its lease was there at each."""

    def __init__(self, lease_key: str) -> None:
        super().__init__()
        self.lease_key = lease_key
        self.calls: list[tuple[str, bool]] = []

    def _log(self, name: str) -> None:
        self.calls.append((name, self.get(self.lease_key) is not None))

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        self._log("set")
        super().set(key, value, ttl)

    def delete(self, key: str, *, if_value: str | None = None) -> bool:
        self._log("delete")
        return super().delete(key, if_value=if_value)

    def delete_guarded(
        self, key: str, *, guard_key: str, guard_value: str, release: bool = False
    ) -> bool:
        self._log("delete_guarded(release)" if release else "delete_guarded")
        return super().delete_guarded(
            key, guard_key=guard_key, guard_value=guard_value, release=release
        )


def test_a_finished_run_deletes_its_row_and_lease_in_one_call() -> None:
    store = CallLog("workflow:lock:one-trip")
    result = durable.run(
        None, lambda step, deps: step(lambda: 1, key="a"), id="one-trip", store=store
    )
    assert result == Ok(1)
    assert store.calls == [("delete_guarded(release)", True)]
    assert (
        store.get("workflow:lock:one-trip") is None and store.get("workflow:state:one-trip") is None
    )


def test_an_idempotent_run_holds_its_lease_until_its_result_is_recorded() -> None:
    # Released with the row, a second caller with the same key could take the
    # lease before the result is recorded, find no state, and run it all again.
    store = CallLog("workflow:lock:idem-run")
    result = durable.run(
        None,
        lambda step, deps: step(lambda: 1, key="a"),
        id="idem-run",
        idempotency_key="k",
        store=store,
    )
    assert result == Ok(1)
    assert store.calls == [("delete_guarded", True), ("set", True), ("delete", True)]
    assert store.get("workflow:lock:idem-run") is None


class _Awaitable:
    """Awaitable without being a coroutine (a Future-like object)."""

    def __await__(self) -> Any:
        yield None


class _AwaitableDict(dict[str, int]):
    """A dict subclass that is awaitable: the shortcut for plain dicts must not pass it."""

    def __await__(self) -> Any:
        yield None


@pytest.mark.parametrize("make", [lambda: asyncio.sleep(0), _Awaitable, _AwaitableDict])
def test_a_sync_step_that_returns_an_awaitable_is_a_usage_error(make: Any) -> None:
    def body(step: Any, deps: Any) -> Any:
        return step(make, key="a")

    with pytest.raises(DurableUsageError, match="returned an awaitable"):
        durable.run(None, body, id="awaitable", store=MemoryStore())


class StartLog(MemoryStore):
    """The calls a run starts with; ``fail``: ``add_and_get`` takes the lease, then raises
    (its reply lost twice, say)."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.calls: list[str] = []

    def add(self, key: str, value: str, ttl: float | None = None) -> bool:
        self.calls.append("add")
        return super().add(key, value, ttl)

    def get(self, key: str) -> str | None:
        self.calls.append("get")
        return super().get(key)

    def add_and_get(
        self, key: str, value: str, ttl: float | None = None, *, other_key: str
    ) -> tuple[bool, str | None]:
        self.calls.append("add_and_get")
        with self._lock:  # not through the logged add and get
            taken = self._live(key) is None
            if taken:
                self._rows[key] = (value, self._expiry(ttl))
            if self.fail:
                raise ConnectionError("the reply was lost")
            return taken, self._live(other_key)


def test_a_run_takes_its_lease_and_loads_its_row_in_one_call() -> None:
    store = StartLog()
    assert durable.run(None, lambda step, deps: step(lambda: 1, key="a"), id="s", store=store).ok
    assert store.calls[:1] == ["add_and_get"] and "add" not in store.calls
    allowed = StartLog()
    run = durable.run(
        None,
        lambda step, deps: step(lambda: 1, key="a"),
        id="s",
        store=allowed,
        allow_concurrent=True,
    )
    assert run.ok and allowed.calls[:1] == ["get"]  # no lease: the row alone


def test_a_lease_taken_by_a_failed_call_is_given_back() -> None:
    store = StartLog(fail=True)
    ran: list[str] = []
    result = durable.run(
        None, lambda step, deps: step(lambda: ran.append("a"), key="a"), id="f", store=store
    )
    assert isinstance(result, Err) and isinstance(result.error, PersistenceFailed), result
    assert ran == [] and "ConnectionError" in repr(result.error)
    assert store.get("workflow:lock:f") is None  # released: the id is free at once
