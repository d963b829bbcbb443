"""``sqlalchemy-awaitly worker`` as an operator runs it: runs SIGKILLed in another
process are resumed, two workers racing run each once, and SIGTERM mid-step
leaves the run resumable with its lease released."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import RunState

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
BOUND = 60.0
LEASE = 1.0


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres").url)
    return sqlite_url


class Setup:
    def __init__(self, url: str, table: str, tmp_path: Path) -> None:
        self.url, self.table = url, table
        self.effects = tmp_path / "effects"
        self.release = tmp_path / "release"
        self.env = os.environ | {
            "PYTHONPATH": str(TESTS),
            "WORKER_EFFECTS": str(self.effects),
            "WORKER_RELEASE": str(self.release),
            "WORKER_LEASE_TTL": str(LEASE),
        }

    def crash(self, ids: list[str], at: str, slow: bool = False) -> None:
        """Start ``ids`` in a process that is SIGKILLed once each reached step ``at``."""
        env = self.env | {"WORKER_KILL_AT": at, "WORKER_SLOW": "1" if slow else "0"}
        args = [sys.executable, str(TESTS / "worker_app.py"), self.url, self.table, *ids]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=BOUND)
        assert done.returncode == -signal.SIGKILL, done.stderr

    def worker(self, *extra: str, app: str = "worker_app:registry") -> subprocess.Popen[str]:
        """A worker process, once it says it is watching (its signal handlers are in)."""
        args = ["--app", app, "--url", self.url, "--table", self.table]
        worker = subprocess.Popen(
            [sys.executable, "-m", "sqlalchemy_awaitly", "worker", *args, "--poll", "0.1",
             "--lease-ttl", str(LEASE), *extra],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert worker.stdout is not None
        ready, _, _ = select.select([worker.stdout], [], [], BOUND)
        first = worker.stdout.readline() if ready else ""
        if not first.startswith("worker "):
            worker.kill()
            raise AssertionError(f"the worker did not start: {first!r} {worker.communicate()}")
        return worker

    def ran(self) -> Counter[tuple[str, str]]:
        if not self.effects.exists():
            return Counter()
        lines = self.effects.read_text().splitlines()
        return Counter((line.split()[0], line.split()[1]) for line in lines)

    def pending(self) -> list[durable.PendingRun]:
        store = SQLAlchemyKeyValueStore(self.url, table_name=self.table)
        try:
            return durable.list_pending(store)
        finally:
            store.close()

    def lock(self, workflow_id: str) -> str | None:
        store = SQLAlchemyKeyValueStore(self.url, table_name=self.table)
        try:
            return store.get(f"workflow:lock:{workflow_id}")
        finally:
            store.close()


def wait_until(done: Callable[[], bool], what: str, *workers: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + BOUND
    while not done():
        if time.monotonic() > deadline:
            for worker in workers:
                worker.kill()
                print(worker.communicate())
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stopped(worker: subprocess.Popen[str], *, sigterm: bool = True) -> tuple[int, str, str]:
    """SIGTERM the worker (unless it was already); its exit code and output."""
    if sigterm:
        worker.send_signal(signal.SIGTERM)
    try:
        out, err = worker.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        worker.kill()
        out, err = worker.communicate()
    return worker.returncode, out, err


@pytest.fixture
def setup(url: str, table_name: str, tmp_path: Path) -> Setup:
    return Setup(url, table_name, tmp_path)


def drained(setup: Setup, ids: list[str], app: str = "worker_app:registry") -> tuple[str, str]:
    """Run a worker until ``ids`` (crashed after step a) are done, stop it, and check
    each step ran once and each run was reported completed; its output."""
    worker = setup.worker(app=app)
    wait_until(lambda: setup.pending() == [], "every run finished", worker)
    code, out, err = stopped(worker)
    assert code == 0, err
    assert setup.ran() == Counter({(i, s): 1 for i in ids for s in ("a", "b", "c")})
    assert sorted(line for line in out.splitlines() if line.endswith("completed")) == [
        f"{i}: resumed, completed" for i in ids
    ]
    return out, err


def test_a_worker_resumes_runs_killed_in_another_process(setup: Setup) -> None:
    ids = [f"order-{n}" for n in range(5)]
    setup.crash(ids, at="b")
    assert setup.ran() == Counter({(i, "a"): 1 for i in ids})
    assert {r.state for r in setup.pending()} == {RunState.RUNNING}  # leases not lapsed yet
    out, err = drained(setup, ids)
    assert "5 resumed" in out and "stopping (SIGTERM)" in err


def test_a_worker_resumes_asyncio_workflows_on_an_asyncio_store_of_its_own(
    setup: Setup,
) -> None:
    ids = [f"async-{n}" for n in range(3)]
    setup.crash(ids, at="b")
    drained(setup, ids, app="worker_app:async_registry")


def test_two_workers_racing_run_each_crashed_run_once(setup: Setup) -> None:
    ids = [f"race-{n}" for n in range(12)]
    setup.crash(ids, at="b")
    workers = [setup.worker("--concurrency", "3"), setup.worker("--concurrency", "3")]
    wait_until(lambda: setup.pending() == [], "every run finished", *workers)
    outs = [stopped(worker) for worker in workers]
    assert [code for code, _, _ in outs] == [0, 0], [err for _, _, err in outs]
    assert setup.ran() == Counter({(i, s): 1 for i in ids for s in ("a", "b", "c")})
    completed = [line for _, out, _ in outs for line in out.splitlines() if "completed" in line]
    assert sorted(completed) == sorted(f"{i}: resumed, completed" for i in ids)


def test_sigterm_mid_step_lets_the_step_finish_and_leaves_the_run_resumable(
    setup: Setup,
) -> None:
    setup.crash(["slow-1"], at="a", slow=True)
    worker = setup.worker()
    wait_until(lambda: setup.ran()[("slow-1", "b-started")] == 1, "step b to start", worker)
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # the worker has the signal; step b is still running
    assert worker.poll() is None
    setup.release.touch()
    code, out, err = stopped(worker, sigterm=False)  # signalled above
    assert code == 0, err
    assert "slow-1: stopped before its next step; resumable" in out
    assert setup.ran() == Counter(
        {("slow-1", "a"): 1, ("slow-1", "b-started"): 1, ("slow-1", "b"): 1}
    )
    [run] = setup.pending()
    assert (run.state, run.steps) == (RunState.CRASHED, 2)  # b kept; not cancelled
    assert setup.lock("slow-1") is None  # the lease released, not left to expire
    again = setup.worker()
    wait_until(lambda: setup.pending() == [], "the run finished by a new worker", again)
    assert stopped(again)[0] == 0
    assert setup.ran()[("slow-1", "c")] == 1 and setup.ran()[("slow-1", "b")] == 1


def test_a_worker_that_outlives_its_grace_exits_and_the_run_stays_resumable(
    setup: Setup,
) -> None:
    setup.crash(["stuck-1"], at="a", slow=True)
    worker = setup.worker("--grace", "0.5")
    wait_until(lambda: setup.ran()[("stuck-1", "b-started")] == 1, "step b to start", worker)
    code, _, err = stopped(worker)
    assert code == 130, err
    assert "exiting at the grace period ending: 1 run(s) left to their leases" in err
    setup.release.touch()
    again = setup.worker()
    wait_until(lambda: setup.pending() == [], "the run finished once its lease lapsed", again)
    assert stopped(again)[0] == 0
    ran = setup.ran()
    assert ran[("stuck-1", "a")] == 1 and ran[("stuck-1", "c")] == 1
    assert ran[("stuck-1", "b")] == 1 and ran[("stuck-1", "b-started")] == 2  # b was cut short


def test_the_worker_reports_bad_apps_and_exits_2(setup: Setup, tmp_path: Path) -> None:
    def worker(app: str) -> Any:
        args = ["worker", "--app", app, "--url", setup.url, "--table", setup.table]
        return subprocess.run(
            [sys.executable, "-m", "sqlalchemy_awaitly", *args],
            env=setup.env, capture_output=True, text=True, timeout=BOUND,
        )  # fmt: skip

    for app, said in [
        ("worker_app", "--app must be module:attribute"),
        ("no_such_module:registry", "cannot import 'no_such_module'"),
        ("worker_app:nothing", "has no attribute 'nothing'"),
        ("worker_app:orders", "is a function, not a durable.Registry"),
    ]:
        done = worker(app)
        assert (done.returncode, said in done.stderr) == (2, True), done.stderr
