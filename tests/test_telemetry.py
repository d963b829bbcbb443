"""OpenTelemetry: spans and metrics of runs, steps and store calls, read through the
SDK's in-memory exporters (``otel_sdk.py``); nothing recorded, and nothing failing,
without an SDK or without the API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from durable_harness import Env, Form, With
from fake_clock import FakeClock
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from otel_sdk import Telemetry, sdk_installed
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from sqlalchemy_awaitly import AwaitlyStoreError, SQLAlchemyKeyValueStore
from sqlalchemy_awaitly.durable import Err, Ok, Retry, Timeout
from sqlalchemy_awaitly.telemetry import gate

SECRET = "card 4111-1111-1111-1111"
PROJECT = Path(__file__).resolve().parent.parent


def children(telemetry: Telemetry, parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [
        s
        for s in telemetry.spans()
        if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


def everything_recorded(telemetry: Telemetry) -> str:
    """Every name, attribute and event of every span, as text to search."""
    parts = []
    for s in telemetry.spans():
        parts.append(s.name)
        parts.append(json.dumps(dict(s.attributes or {}), default=str))
        for e in s.events:
            parts.append(e.name + json.dumps(dict(e.attributes or {}), default=str))
        if s.status.description:
            parts.append(s.status.description)
    return "\n".join(parts)


def test_a_run_with_a_retry_a_failure_and_its_resume(durable_env: Env, otel: Telemetry) -> None:
    declined = {"on": True}

    def charge() -> Any:
        if declined["on"]:
            raise RuntimeError(SECRET)
        return {"paid": SECRET}

    def body(deps: Any) -> Any:
        user = yield "fetch-user", lambda: {"name": SECRET}
        yield With("charge", charge, retry=Retry(2, initial_delay=0.5, jitter=False))
        return user

    failed = durable_env.run(body, id="order-1", clock=FakeClock())
    assert isinstance(failed, Err)

    (run,) = otel.named(f"run {'sync' if durable_env.flavour == 'sync' else 'asynchronous'}")
    # Named by the workflow function (a registered run: by its type).
    assert run.parent is None and run.kind == SpanKind.INTERNAL
    assert run.attributes is not None
    assert run.attributes["awaitly.workflow.id"] == "order-1"
    assert run.attributes["awaitly.run.resumed"] is False
    assert run.attributes["awaitly.outcome"] == "failed"
    assert run.attributes["error.type"] == "UNEXPECTED_ERROR"
    assert run.status.status_code == StatusCode.ERROR
    steps = [s for s in children(otel, run) if s.name.startswith("step ")]
    assert [s.name for s in steps] == ["step fetch-user", "step charge"]
    fetch, charge_span = steps
    assert fetch.attributes == {
        "awaitly.workflow.id": "order-1",
        "awaitly.step.key": "fetch-user",
        "awaitly.step.name": "fetch-user",
        "awaitly.step.replayed": False,
        "awaitly.step.attempt": 1,
        "awaitly.outcome": "ok",
    }
    assert charge_span.attributes is not None
    assert charge_span.attributes["awaitly.step.attempt"] == 2
    assert charge_span.attributes["awaitly.outcome"] == "error"
    assert charge_span.status.status_code == StatusCode.ERROR
    events = [(e.name, dict(e.attributes or {})) for e in charge_span.events]
    assert events == [
        (
            "retry",
            {"awaitly.step.attempt": 2, "awaitly.retry.delay": 0.5, "error.type": "RuntimeError"},
        ),
        ("exception", {"exception.type": "RuntimeError"}),
    ]
    if durable_env.backend != "memory":  # the checkpoints are store calls under their step
        saves = children(otel, fetch)
        assert [s.attributes and s.attributes["awaitly.store.method"] for s in saves] == [
            "set_guarded"
        ]
        assert saves[0].kind == SpanKind.CLIENT

    otel.clear()
    durable_env.helper("retry_step", "order-1")
    declined["on"] = False
    assert durable_env.run(body, id="order-1", clock=FakeClock()) == Ok({"name": SECRET})
    (resumed,) = [s for s in otel.spans() if s.name.startswith("run ")]
    assert resumed.attributes is not None
    assert resumed.attributes["awaitly.run.resumed"] is True
    assert resumed.attributes["awaitly.run.stored_steps"] == 1
    assert resumed.attributes["awaitly.outcome"] == "completed"
    assert resumed.status.status_code == StatusCode.UNSET
    # Linked to the span of the run that wrote the row.
    assert [link.context.span_id for link in resumed.links] == [run.context.span_id]
    replayed, again = [s for s in children(otel, resumed) if s.name.startswith("step ")]
    assert replayed.attributes is not None and again.attributes is not None
    assert replayed.attributes["awaitly.step.replayed"] is True
    assert again.attributes["awaitly.step.replayed"] is False
    assert again.attributes["awaitly.outcome"] == "ok"

    assert otel.total("awaitly.runs", **{"awaitly.outcome": "failed"}) == 1
    assert otel.total("awaitly.runs", **{"awaitly.outcome": "completed"}) == 1
    assert otel.total("awaitly.runs", **{"awaitly.run.resumed": True}) == 1
    assert otel.total("awaitly.run.duration") == 2
    assert otel.total("awaitly.steps", **{"awaitly.step.replayed": True}) == 1
    assert otel.total("awaitly.steps", **{"awaitly.outcome": "error"}) == 1
    assert otel.total("awaitly.step.duration") == 3  # steps run, not replayed
    assert otel.total("awaitly.step.retries", **{"error.type": "RuntimeError"}) == 1
    # fetch-user, the backoff's record, charge's failure, then charge again.
    assert otel.total("awaitly.checkpoints", **{"awaitly.outcome": "saved"}) == 4
    if durable_env.backend != "memory":
        assert otel.total("db.client.operation.duration") > 0
    assert SECRET not in everything_recorded(otel)


def test_a_run_nests_under_the_apps_span(durable_env: Env, otel: Telemetry) -> None:
    app = trace.get_tracer("the-app")

    def body(deps: Any) -> Any:
        yield "a", lambda: 1

    with app.start_as_current_span("POST /orders") as request:
        assert durable_env.run(body, id="nested") == Ok(None)
    (run,) = [s for s in otel.spans() if s.name.startswith("run ")]
    assert run.parent is not None
    assert run.parent.span_id == request.get_span_context().span_id


def test_what_a_step_records_nests_under_its_span(durable_env: Env, otel: Telemetry) -> None:
    """The step's span is current while it runs: in its thread, a timed step's thread,
    and a group member's thread or task."""
    app = trace.get_tracer("the-app")

    def traced(name: str) -> Any:
        def fn() -> Any:
            with app.start_as_current_span(name):
                return name

        return fn

    def body(deps: Any) -> Any:
        yield "plain", traced("in plain")
        yield With("timed", traced("in timed"), timeout=Timeout(30))
        yield Form("all", {"x": traced("in member x"), "y": traced("in member y")}, key="group")

    assert durable_env.run(body, id="inner").ok
    by_name = {s.name: s for s in otel.exporter.get_finished_spans()}
    for inner, step in [
        ("in plain", "step plain"),
        ("in timed", "step timed"),
        ("in member x", "step group"),
        ("in member y", "step group"),
    ]:
        parent = by_name[inner].parent
        assert parent is not None, inner
        assert parent.span_id == by_name[step].context.span_id, inner


def test_a_timeout_and_a_lost_lease(durable_env: Env, otel: Telemetry) -> None:
    thief = '{"ownerToken":"thief"}'

    def steal_sync() -> Any:
        durable_env.kv.set("workflow:lock:wf-lease", thief, 60)

    async def steal_async() -> Any:  # the loop is running: the async store itself
        written = durable_env.store.set("workflow:lock:wf-lease", thief, 60)
        if written is not None:
            await written

    steal = steal_sync if durable_env.flavour == "sync" else steal_async

    def slow_sync() -> Any:
        time.sleep(0.3)

    async def slow_async() -> Any:
        await asyncio.sleep(0.3)

    slow = slow_sync if durable_env.flavour == "sync" else slow_async

    def body(deps: Any) -> Any:
        yield With("slow", slow, timeout=Timeout(0.05, on_timeout="option"))
        yield "steal", steal  # its checkpoint is refused: the lease changed hands
        yield "after", lambda: 2

    result = durable_env.run(body, id="wf-lease")
    assert isinstance(result, Err) and result.error.type == "LEASE_EXPIRED"
    (slow_span,) = otel.named("step slow")
    assert [(e.name, dict(e.attributes or {})) for e in slow_span.events] == [
        ("timeout", {"awaitly.step.attempt": 1, "awaitly.timeout.limit": 0.05})
    ]
    (steal_span,) = otel.named("step steal")
    assert steal_span.attributes is not None
    assert steal_span.attributes["error.type"] == "LEASE_EXPIRED"
    (run,) = [s for s in otel.spans() if s.name.startswith("run ")]
    assert run.attributes is not None and run.attributes["awaitly.outcome"] == "lease_lost"
    assert otel.total("awaitly.lease.losses") == 1
    assert otel.total("awaitly.checkpoints", **{"awaitly.outcome": "lease_lost"}) == 1


def test_store_calls_on_the_fast_path_and_on_a_callers_connection(
    make_store: Any, request: pytest.FixtureRequest, otel: Telemetry
) -> None:
    store = make_store()
    store.set("k", SECRET)
    assert store.get("k") == SECRET
    assert store.get("missing") is None
    assert store.delete("k") is True
    spans = otel.spans()
    assert [s.attributes and s.attributes["awaitly.store.method"] for s in spans] == [
        "set",
        "get",
        "get",
        "delete",
    ]
    set_span, got, missing, deleted = spans
    postgres = request.node.callspec.params["make_store"].startswith("postgresql")
    table = store.table.name
    assert set_span.name == f"INSERT {table}" and set_span.kind == SpanKind.CLIENT
    assert got.name == f"SELECT {table}" and deleted.name == f"DELETE {table}"
    assert got.attributes is not None
    assert got.attributes["db.system.name"] == ("postgresql" if postgres else "sqlite")
    assert got.attributes["db.collection.name"] == table
    assert got.attributes["db.operation.name"] == "SELECT"
    assert got.attributes["db.query.summary"] == f"SELECT {table}"
    assert got.attributes["db.response.returned_rows"] == 1
    assert missing.attributes is not None
    assert missing.attributes["db.response.returned_rows"] == 0
    assert deleted.attributes is not None and deleted.attributes["awaitly.store.rows"] == 1
    if postgres:
        assert got.attributes["server.address"] == "127.0.0.1"
        assert isinstance(got.attributes["server.port"], int)
        assert "db.namespace" in got.attributes
    points = otel.points("db.client.operation.duration")
    assert {p.attributes["awaitly.store.method"]: p.count for p in points} == {
        "set": 1,
        "get": 2,
        "delete": 1,
    }
    assert SECRET not in everything_recorded(otel)


def test_store_calls_on_a_callers_connection_and_a_failed_one(
    postgres: Any, table_name: str, otel: Telemetry
) -> None:
    engine = create_engine(postgres.url)
    store = SQLAlchemyKeyValueStore(engine=engine, table_name=table_name)
    try:
        store.setup()
        with engine.connect() as conn, conn.begin():
            store.set("k", "v", connection=conn)
            assert store.get("k", connection=conn) == "v"
        with engine.connect() as conn:
            conn.begin()
            with pytest.raises(DBAPIError):
                conn.execute(text("SELECT 1/0"))
            with pytest.raises((DBAPIError, AwaitlyStoreError)) as raised:  # aborted
                store.get("k", connection=conn)
            conn.rollback()
        set_span, got, failed = otel.spans()
        assert (
            set_span.attributes is not None and set_span.attributes["awaitly.store.method"] == "set"
        )
        assert got.attributes is not None and got.attributes["db.response.returned_rows"] == 1
        assert failed.status.status_code == StatusCode.ERROR
        assert failed.attributes is not None
        assert failed.attributes["db.response.status_code"] == "25P02"
        error_type = failed.attributes["error.type"]
        assert isinstance(error_type, str) and error_type.endswith(type(raised.value).__name__)
        assert otel.total("db.client.operation.duration", **{"error.type": error_type}) == 1
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP TABLE IF EXISTS "{table_name}"'))
        engine.dispose()


def test_traces_alone_or_metrics_alone(sqlite_url: str) -> None:
    store = SQLAlchemyKeyValueStore(sqlite_url)
    try:
        with sdk_installed(["metrics"]) as telemetry:
            store.set("k", "v")
            assert telemetry.spans() == []
            assert telemetry.total("db.client.operation.duration") == 1
        with sdk_installed(["traces"]) as telemetry:
            store.set("k", "v")
            assert len(telemetry.spans()) == 1
            assert telemetry.points("db.client.operation.duration") == []
    finally:
        store.close()


def test_without_an_sdk_nothing_is_made(sqlite_url: str) -> None:
    """The API is installed (the tests' environment has it) but no SDK is set up: the
    gate says so at the cost of an attribute read, and a run writes no traceparent."""
    from sqlalchemy_awaitly import durable

    assert gate.fast_gate()  # else every call would ask the API (about 1.2 µs)
    assert not gate.enabled()
    assert gate.tracer() is None and gate.instruments() is None
    store = SQLAlchemyKeyValueStore(sqlite_url)
    try:

        def wf(step: Any, deps: Any) -> Any:
            step(lambda: 1, key="a")
            raise RuntimeError("stop here")

        assert isinstance(durable.run(None, wf, id="plain", store=store), Err)
        row = store.get("workflow:state:plain")
        assert row is not None and "traceparent" not in row
    finally:
        store.close()


def test_without_the_api_installed(tmp_path: Path) -> None:
    """A process where ``import opentelemetry`` fails: the store and runs work."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["opentelemetry"] = None  # as if the extra were not installed
        from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable
        from sqlalchemy_awaitly.telemetry import gate
        assert gate.trace_api is None and not gate.enabled()
        assert gate.tracer() is None and gate.instruments() is None
        store = SQLAlchemyKeyValueStore("sqlite:///{tmp_path / "plain.db"}")
        store.set("k", "v")
        assert store.get("k") == "v"
        result = durable.run(None, lambda step, deps: step(lambda: 2, key="a"), id="w", store=store)
        assert result.ok and result.value == 2, result
        store.close()
        print("fine")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=PROJECT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fine"


def test_a_registered_run_is_named_by_its_type(otel: Telemetry) -> None:
    from sqlalchemy_awaitly.durable import MemoryStore, Registry

    registry = Registry()
    registry.register("checkout", lambda step, deps, input: step(lambda: input, key="a"))
    assert registry.start(MemoryStore(), "checkout", id="c-1", input=3) == Ok(3)
    (run,) = [s for s in otel.spans() if s.name.startswith("run ")]
    assert run.name == "run checkout"
    assert run.attributes is not None and run.attributes["awaitly.workflow.type"] == "checkout"
    (point,) = otel.points("awaitly.runs")
    assert dict(point.attributes) == {
        "awaitly.workflow.type": "checkout",
        "awaitly.outcome": "completed",
        "awaitly.run.resumed": False,
    }
