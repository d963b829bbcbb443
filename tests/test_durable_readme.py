"""The README's durable Quick Start runs as written, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # end to end, in processes of its own: pytest -m slow

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart() -> str:
    text = README.read_text()
    return re.findall(r"<!-- durable-quickstart -->\n```python\n(.*?)```", text, re.S)[0]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_readme_quickstart_runs_as_written(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = request.getfixturevalue("postgres").url
    env: dict[str, Any] = os.environ | {"DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-c", quickstart()],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Ok(value={'id': 'order-1', 'userId': '123'})"


def test_readme_store_quickstart_runs_as_written(tmp_path: Path) -> None:
    text = README.read_text()
    block = re.findall(r"<!-- store-quickstart -->\n```python\n(.*?)```", text, re.S)[0]
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-c", block],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "{'fetch-user': {'ok': True, 'value': {'id': '123'}}}",
        "['checkout-123']",
        "payload",
        "['session:1']",
    ]
