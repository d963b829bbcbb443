"""SIGKILL a run half way through a parallel group, a compensation, or between a child
run's end and its parent's checkpoint: the resumed run does only what was left.

The worker (``durable_kill_worker.py``) notes every member, step and
compensation it runs in a file, kills itself at the chosen point, and is run
again to finish; the notes show what ran, and how many times.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parent / "durable_kill_worker.py"
BOUND = 120.0

pytestmark = pytest.mark.slow


@pytest.fixture(params=["postgresql", "sqlite"])
def database(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres").url)
    return sqlite_url


def worker(database: str, table: str, mode: str, effects: Path, *kill: str) -> int:
    done = subprocess.run(
        [sys.executable, str(WORKER), database, table, f"wf-{mode}", mode, str(effects), *kill],
        capture_output=True,
        text=True,
        timeout=BOUND,
        env=os.environ | {"PYTHONPATH": str(WORKER.parent)},
    )
    if not kill:
        assert done.returncode == 0, done.stderr
    return done.returncode


def killed_then_resumed(database: str, table: str, mode: str, tmp_path: Path) -> list[str]:
    effects = tmp_path / "effects.txt"
    assert worker(database, table, mode, effects, "kill") == -signal.SIGKILL
    before = effects.read_text().split() if effects.exists() else []
    worker(database, table, mode, effects)
    return [*before, "--", *effects.read_text().split()[len(before) :]]


def test_a_group_killed_half_way_runs_only_its_unfinished_member_again(
    database: str, table_name: str, tmp_path: Path
) -> None:
    assert killed_then_resumed(database, table_name, "group", tmp_path) == ["a", "--", "b"]


def test_a_compensation_killed_half_way_runs_each_compensation_once(
    database: str, table_name: str, tmp_path: Path
) -> None:
    ran = killed_then_resumed(database, table_name, "compensation", tmp_path)
    assert ran == ["reserve", "charge", "undo-charge", "--", "undo-reserve"]


def test_a_child_that_ended_before_its_parent_s_checkpoint_is_not_run_again(
    database: str, table_name: str, tmp_path: Path
) -> None:
    assert killed_then_resumed(database, table_name, "child", tmp_path) == ["c1", "--", "p2"]


def test_a_process_stopped_with_sigterm_leaves_its_run_resumable_not_cancelled(
    database: str, table_name: str, tmp_path: Path
) -> None:
    import time

    from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable

    effects = tmp_path / "effects.txt"
    command = [database, table_name, "wf-sleepy", "sleepy", str(effects), "kill"]
    stopped = subprocess.Popen(
        [sys.executable, str(WORKER), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ | {"PYTHONPATH": str(WORKER.parent)},
    )
    try:
        deadline = time.monotonic() + BOUND
        while not (effects.exists() and "s2-started" in effects.read_text()):
            assert stopped.poll() is None, stopped.communicate()
            assert time.monotonic() < deadline, "the worker never reached its second step"
            time.sleep(0.02)
        stopped.send_signal(signal.SIGTERM)
        assert stopped.wait(BOUND) == -signal.SIGTERM
    finally:
        if stopped.poll() is None:
            stopped.kill()
            stopped.wait(BOUND)
    with SQLAlchemyKeyValueStore(database, table_name=table_name) as store:
        [run] = durable.list_pending(store)
        assert run.state is not durable.RunState.CANCELLED  # running until its lease ends
    worker(database, table_name, "sleepy", effects)  # resumes it
    assert effects.read_text().split() == ["s1", "s2-started", "s2-started"]
