"""Interop with the real awaitly 1.35.0 on Node.js, through the same PostgreSQL table.

awaitly and pg are installed from npm at test time. ``tests/interop/`` holds
the same checkout workflow for both runtimes and a small JavaScript store
over our table (key = prefix + id, value = JSON text, the same lease rows).
A run started by one runtime and SIGKILLed in its second step is finished
by the other without repeating its first step; idempotency records are
honoured both ways.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore

INTEROP = Path(__file__).resolve().parent / "interop"
pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="session")
def node_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """awaitly@1.35.0 and pg from npm, next to our two JavaScript files."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Node.js and npm for the interop tests")
        pytest.skip("no Node.js")
    project = tmp_path_factory.mktemp("awaitly-node")
    (project / "package.json").write_text('{"private": true, "type": "module"}\n')
    installed = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "awaitly@1.35.0", "pg@8"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr
    for script in ("pg_store.mjs", "workflow.mjs", "values.mjs", "forms.mjs"):
        shutil.copy(INTEROP / script, project / script)
    for script in ("groups.mjs", "saga.mjs", "child.mjs", "cancel.mjs"):
        shutil.copy(INTEROP / script, project / script)
    return project


@pytest.fixture
def shared(postgres: Any, table_name: str) -> Iterator[dict[str, Any]]:
    """The state table (made by the Python store) and a table noting who ran which step."""
    store = SQLAlchemyKeyValueStore(postgres.url, table_name=table_name)
    store.setup()
    engine = create_engine(postgres.url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS interop_effects"))
        conn.execute(
            text("CREATE TABLE interop_effects (workflow_id text, step text, runtime text)")
        )
    plain_url = postgres.url.replace("+psycopg", "")
    yield {"url": plain_url, "table": table_name, "store": store, "engine": engine}
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE interop_effects"))
    store.close()
    engine.dispose()


def run_python(config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(INTEROP / "workflow.py"), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_node(project: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(project / "workflow.mjs"), json.dumps(config)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )


def answer(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def who_ran(shared: dict[str, Any], workflow_id: str) -> dict[str, list[str]]:
    with shared["engine"].connect() as conn:
        rows = conn.execute(
            text("SELECT step, runtime FROM interop_effects WHERE workflow_id = :id"),
            {"id": workflow_id},
        ).all()
    ran: dict[str, list[str]] = {}
    for step, runtime in rows:
        ran.setdefault(step, []).append(runtime)
    return ran


EXPECTED = {
    "user": {"id": "123", "name": "Alice"},
    "order": {"id": "order-1", "userId": "123"},
    "mail": {"to": "Alice", "order": "order-1"},
}


def crash_then_resume(
    shared: dict[str, Any], first: Any, second: Any, names: tuple[str, str]
) -> None:
    workflow_id = f"checkout-{names[0]}-to-{names[1]}"
    config = {"url": shared["url"], "table": shared["table"], "id": workflow_id}
    crashed = first({**config, "crashIn": "create-order"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    stored = json.loads(shared["store"].get(f"workflow:state:{workflow_id}"))
    assert list(stored["steps"]) == ["fetch-user"]

    assert answer(second(config)) == {"ok": True, "value": EXPECTED}
    assert who_ran(shared, workflow_id) == {
        "fetch-user": [names[0]],  # not run again by the resuming side
        "create-order": [names[1]],
        "send-email": [names[1]],
    }
    assert shared["store"].get(f"workflow:state:{workflow_id}") is None  # success deleted it
    assert shared["store"].keys("workflow:lock:*") == []


def test_awaitly_resumes_what_python_started(node_project: Path, shared: dict[str, Any]) -> None:
    crash_then_resume(shared, run_python, lambda c: run_node(node_project, c), ("python", "node"))


def test_python_resumes_what_awaitly_started(node_project: Path, shared: dict[str, Any]) -> None:
    crash_then_resume(shared, lambda c: run_node(node_project, c), run_python, ("node", "python"))


@pytest.mark.parametrize("direction", ["python-to-node", "node-to-python"])
def test_idempotency_records_are_honoured_both_ways(
    node_project: Path, shared: dict[str, Any], direction: str
) -> None:
    runners = {"python": run_python, "node": lambda c: run_node(node_project, c)}
    first, second = direction.split("-to-")
    key = f"req-{direction}"
    config = {
        "url": shared["url"],
        "table": shared["table"],
        "idempotencyKey": key,
        "input": {"orderId": 9},
    }
    assert answer(runners[first]({**config, "id": f"{direction}-a"})) == {
        "ok": True,
        "value": EXPECTED,
    }
    again = answer(runners[second]({**config, "id": f"{direction}-b"}))
    assert again == {"ok": True, "value": EXPECTED}
    assert who_ran(shared, f"{direction}-b") == {}  # answered from the record, nothing ran
    record = json.loads(shared["store"].get(f"workflow:state:idem:{key}"))
    assert record["execution"]["status"] == "completed"
    assert record["metadata"]["finalResult"] == {"ok": True, "value": EXPECTED}


def test_values_awaitly_stores_survive_a_python_rewrite(
    node_project: Path, shared: dict[str, Any]
) -> None:
    """Node stores a lone surrogate, 2**60, a number past 2**53, 1e21 / 5e-324 and
    3,000 levels of nesting; Python resumes and rewrites the row; Node, replaying
    from Python's row, gets back exactly what it stored (deep strict equality)."""
    config = {"url": shared["url"], "table": shared["table"], "id": "values"}

    def node(phase: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["node", str(node_project / "values.mjs"), json.dumps({**config, "phase": phase})],
            cwd=node_project,
            capture_output=True,
            text=True,
            timeout=120,
        )

    written = node("write")
    assert written.returncode == -signal.SIGKILL, written.stderr
    resumed = subprocess.run(
        [sys.executable, str(INTEROP / "values.py"), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == -signal.SIGKILL, resumed.stdout + resumed.stderr
    row = shared["store"].get("workflow:state:values")
    assert '"python-step":{"ok":true,"value":"from python"}' in row
    assert "\\ud83d" in row  # the surrogate stays escaped, as JSON.stringify wrote it
    checked = node("check")
    assert checked.returncode == 0, checked.stderr  # the deep-equality asserts passed
    assert answer(checked) == {"ok": True, "value": "from python", "ran": []}


def run_twin(script: str, runtime: str, project: Path, config: dict[str, Any]) -> Any:
    """Run ``<script>.py`` (Python) or its twin ``<script>.mjs`` (awaitly on Node.js)."""
    if runtime == "python":
        command = [sys.executable, str(INTEROP / f"{script}.py"), json.dumps(config)]
    else:
        command = ["node", str(project / f"{script}.mjs"), json.dumps(config)]
    return subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=120)


# --- the step forms: retry, timeout, sleep, try, fromResult ------------------------------

FORM_STEPS = ["flaky", "slow", "nap", "parsed", "found"]


@pytest.mark.parametrize("direction", ["python-to-node", "node-to-python"])
def test_each_form_s_outcome_is_resumed_by_the_other_runtime(
    node_project: Path, shared: dict[str, Any], direction: str
) -> None:
    first, second = direction.split("-to-")
    workflow_id = f"forms-{direction}"
    config = {"url": shared["url"], "table": shared["table"], "id": workflow_id}
    crashed = run_twin("forms", first, node_project, {**config, "crashIn": "crash-here"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    row = json.loads(shared["store"].get(f"workflow:state:{workflow_id}"))
    assert row["steps"] == {
        "flaky": {"ok": True, "value": "ok-after-retry"},
        "slow": {"ok": True},
        "nap": {"ok": True},
        "parsed": {"ok": True, "value": 42},
        "found": {"ok": True, "value": "v"},
    }
    assert answer(run_twin("forms", second, node_project, config)) == {"ok": True, "value": "done"}
    ran = who_ran(shared, workflow_id)
    assert ran == {
        "flaky": [first, first],  # two attempts, both before the crash
        "slow": [first],
        "parsed": [first],
        "found": [first],
        "crash-here": [second],
        "final": [second],
    }


@pytest.mark.parametrize("failing", ["timeout", "exhausted"])
def test_a_failed_form_is_stored_alike_by_both_runtimes(
    node_project: Path, shared: dict[str, Any], failing: str
) -> None:
    rows = {}
    for runtime in ("python", "node"):
        workflow_id = f"failing-{failing}-{runtime}"
        config = {"url": shared["url"], "table": shared["table"], "id": workflow_id}
        done = run_twin("forms", runtime, node_project, {**config, "failing": failing})
        assert answer(done)["ok"] is False
        rows[runtime] = json.loads(shared["store"].get(f"workflow:state:{workflow_id}"))["steps"]
    assert rows["python"] == rows["node"]


# --- parallel groups: keyed step.all and step.map -------------------------------------

GROUPS_ANSWER = {"ok": True, "value": {"both": {"a": 1, "b": "two"}, "tens": [10, 20, 30]}}


@pytest.mark.parametrize("direction", ["python-to-node", "node-to-python"])
def test_keyed_groups_are_stored_alike_and_resumed_by_the_other_runtime(
    node_project: Path, shared: dict[str, Any], direction: str
) -> None:
    first, second = direction.split("-to-")
    workflow_id = f"groups-{direction}"
    config = {"url": shared["url"], "table": shared["table"], "id": workflow_id}
    crashed = run_twin("groups", first, node_project, {**config, "crashIn": "crash-here"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    row = json.loads(shared["store"].get(f"workflow:state:{workflow_id}"))
    assert row["steps"] == {
        "both": {"ok": True, "value": {"a": 1, "b": "two"}},
        "tens": {"ok": True, "value": [10, 20, 30]},
    }
    assert "sqlalchemyAwaitly" not in row["metadata"]
    assert answer(run_twin("groups", second, node_project, config)) == GROUPS_ANSWER
    ran = who_ran(shared, workflow_id)
    assert ran == {
        "a": [first],
        "b": [first],
        "m1": [first],
        "m2": [first],
        "m3": [first],
        "crash-here": [second],
    }


@pytest.mark.parametrize(
    ("first", "second", "a_ran_by"),
    [
        ("python", "python", ["python"]),  # a was recorded: only b runs again
        ("python", "node", ["python", "node"]),  # awaitly runs the whole group again
        ("node", "python", ["node", "python"]),  # awaitly recorded nothing of the group
    ],
)
def test_a_group_killed_half_way_is_resumed(
    node_project: Path,
    shared: dict[str, Any],
    first: str,
    second: str,
    a_ran_by: list[str],
) -> None:
    workflow_id = f"group-half-{first}-to-{second}"
    config = {"url": shared["url"], "table": shared["table"], "id": workflow_id}
    crashed = run_twin("groups", first, node_project, {**config, "crashIn": "group"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert answer(run_twin("groups", second, node_project, config)) == GROUPS_ANSWER
    ran = who_ran(shared, workflow_id)
    assert ran["a"] == a_ran_by
    assert ran["b"] == [second]  # killed before it ended: it ran once, when resumed
    assert shared["store"].get(f"workflow:state:{workflow_id}") is None


def test_a_failed_map_is_stored_alike_by_both_runtimes(
    node_project: Path, shared: dict[str, Any]
) -> None:
    rows = {}
    for runtime in ("python", "node"):
        workflow_id = f"failing-map-{runtime}"
        config = {"url": shared["url"], "table": shared["table"], "id": workflow_id}
        done = run_twin("groups", runtime, node_project, {**config, "failing": True})
        assert answer(done) == {"ok": False, "error": {"type": "TWO"}}
        rows[runtime] = json.loads(shared["store"].get(f"workflow:state:{workflow_id}"))["steps"]
    assert rows["python"] == rows["node"]


# --- compensation ---------------------------------------------------------------------

SAGA_STEPS = {
    "reserve": {"ok": True, "value": {"room": 7}},
    "charge": {"ok": True, "value": "ch_1"},
    "crash-here": {"ok": True, "value": "crossed"},
}


def saga_steps(shared: dict[str, Any], workflow_id: str) -> dict[str, Any]:
    steps = dict(json.loads(shared["store"].get(f"workflow:state:{workflow_id}"))["steps"])
    assert steps.pop("ship")["error"] == {"type": "NO_COURIER"}
    return steps


@pytest.mark.parametrize("runtime", ["python", "node"])
def test_a_failed_saga_is_stored_alike_and_undone_once(
    node_project: Path, shared: dict[str, Any], runtime: str
) -> None:
    workflow_id = f"saga-{runtime}"
    config = {"url": shared["url"], "table": shared["table"], "id": workflow_id}
    assert answer(run_twin("saga", runtime, node_project, config))["error"] == {
        "type": "NO_COURIER"
    }
    assert saga_steps(shared, workflow_id) == SAGA_STEPS
    undone = {"undo-charge": [runtime], "undo-reserve": [runtime]}
    assert who_ran(shared, workflow_id) == undone
    # A Python rerun of the failed run undoes nothing again, whoever stored it.
    assert answer(run_twin("saga", "python", node_project, config))["error"] == {
        "type": "NO_COURIER"
    }
    assert who_ran(shared, workflow_id) == undone


@pytest.mark.parametrize(
    ("first", "second", "undone"),
    [
        # Python undoes the steps the killed Node.js process completed...
        ("node", "python", {"undo-charge": ["python"], "undo-reserve": ["python"]}),
        # ...where awaitly compensates only what its own execution ran: nothing here.
        ("python", "node", {}),
    ],
)
def test_a_saga_resumed_after_a_kill_by_the_other_runtime(
    node_project: Path,
    shared: dict[str, Any],
    first: str,
    second: str,
    undone: dict[str, list[str]],
) -> None:
    workflow_id = f"saga-{first}-to-{second}"
    config = {"url": shared["url"], "table": shared["table"], "id": workflow_id}
    crashed = run_twin("saga", first, node_project, {**config, "crashIn": "crash-here"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    assert answer(run_twin("saga", second, node_project, config))["error"] == {"type": "NO_COURIER"}
    assert saga_steps(shared, workflow_id) == SAGA_STEPS
    assert who_ran(shared, workflow_id) == undone


# --- child workflows ------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["python-to-node", "node-to-python"])
def test_a_child_s_step_is_stored_alike_and_not_run_again_by_the_other_runtime(
    node_project: Path, shared: dict[str, Any], direction: str
) -> None:
    first, second = direction.split("-to-")
    workflow_id = f"child-{direction}"
    config = {"url": shared["url"], "table": shared["table"], "id": workflow_id}
    crashed = run_twin("child", first, node_project, {**config, "crashIn": "crash-here"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr
    row = json.loads(shared["store"].get(f"workflow:state:{workflow_id}"))
    assert row["steps"] == {"sub": {"ok": True, "value": {"total": 12}}}
    assert shared["store"].get(f"workflow:state:{workflow_id}:sub") is None  # it ended
    idem = json.loads(shared["store"].get(f"workflow:state:idem:{workflow_id}:sub"))
    assert idem["metadata"]["finalResult"] == {"ok": True, "value": {"total": 12}}
    assert answer(run_twin("child", second, node_project, config)) == {
        "ok": True,
        "value": {"total": 12},
    }
    assert who_ran(shared, workflow_id) == {"c1": [first]}


# --- cancellation ---------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["python-to-node", "node-to-python"])
def test_a_cancelled_run_is_kept_alike_and_resumed_by_the_other_runtime(
    node_project: Path, shared: dict[str, Any], direction: str
) -> None:
    first, second = direction.split("-to-")
    workflow_id = f"cancel-{direction}"
    config = {"url": shared["url"], "table": shared["table"], "id": workflow_id}
    cancelled = answer(run_twin("cancel", first, node_project, {**config, "cancelAfter": "s1"}))
    assert cancelled == {"ok": False, "cancelled": "WORKFLOW_CANCELLED"}
    row = json.loads(shared["store"].get(f"workflow:state:{workflow_id}"))
    assert row["steps"] == {"s1": {"ok": True, "value": "S1"}}
    marked = "cancelled" in row["metadata"].get("sqlalchemyAwaitly", {})
    assert marked is (first == "python")  # awaitly keeps the steps only
    # awaitly resumes a cancelled run as it is; Python once it is uncancelled.
    resumed = answer(run_twin("cancel", second, node_project, {**config, "uncancel": True}))
    assert resumed == {"ok": True, "value": "S3"}
    assert who_ran(shared, workflow_id) == {"s1": [first], "s2": [second], "s3": [second]}


def test_the_worker_recovers_a_run_awaitly_started_with_the_documented_metadata(
    node_project: Path, shared: dict[str, Any]
) -> None:
    workflow_id = "checkout-node-recovered"
    recorded = {"type": "checkout", "version": 1, "input": {"id": workflow_id, "note": "n1"}}
    config = {"url": shared["url"], "table": shared["table"], "id": workflow_id}
    metadata = {"sqlalchemyAwaitly": {"workflow": recorded}}
    crashed = run_node(node_project, {**config, "crashIn": "create-order", "metadata": metadata})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    row = json.loads(shared["store"].get(f"workflow:state:{workflow_id}"))
    assert row["metadata"]["sqlalchemyAwaitly"]["workflow"] == recorded  # with its first step

    app = ["--app", "checkout_app:registry", "--url", shared["url"], "--table", shared["table"]]
    worker = subprocess.Popen(
        [sys.executable, "-m", "sqlalchemy_awaitly", "worker", *app, "--poll", "0.1"],
        env=os.environ | {"PYTHONPATH": str(INTEROP), "INTEROP_URL": shared["url"]},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while shared["store"].get(f"workflow:state:{workflow_id}") is not None:
            assert time.monotonic() < deadline, "the worker never finished the run"
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert f"{workflow_id}: resumed, completed" in out
    assert who_ran(shared, workflow_id) == {
        "fetch-user": ["node"],  # not run again
        "create-order": ["python n1"],  # with the input Node recorded
        "send-email": ["python n1"],
    }
