"""The examples run as a user runs them: with no argument (a SQLite file of their own),
and against PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end, in processes of its own: pytest -m slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("example", ["quickstart.py", "async_quickstart.py"])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_example_runs(example: str, backend: str, request: pytest.FixtureRequest) -> None:
    args = [sys.executable, str(EXAMPLES / example)]
    if backend == "postgresql":
        args.append(request.getfixturevalue("postgres").url)
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(args, capture_output=True, text=True, env=environment, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(fetch-user was not run again)" in done.stdout
