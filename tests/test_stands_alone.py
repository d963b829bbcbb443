"""The repository stands alone: a clone with nothing beside it runs the fixture tests.

The awaitly 1.35 fixtures once came from a folder next to the checkout; a
fresh clone then failed and skipped. Here the committed tree is cloned into
an empty temp dir and the tests that read fixtures run there, importing the
clone's own package, with no skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PostgresHandle

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # end to end, in processes of its own: pytest -m slow


def test_a_clone_with_nothing_beside_it_runs_the_fixture_tests(
    tmp_path: Path, postgres: PostgresHandle
) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("needs git and a git checkout to clone")
    clone = tmp_path / "alone" / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    assert sorted(p.name for p in clone.parent.iterdir()) == ["repo"]
    environment = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PYTHONPATH")},
        "PYTHONPATH": str(clone),
        "TEST_DATABASE_URL": postgres.url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_durable_fixtures.py", "tests/test_persistence.py"],
        cwd=clone, env=environment, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "passed" in summary and "skipped" not in summary, summary
    imported = subprocess.run(
        [sys.executable, "-c", "import sqlalchemy_awaitly; print(sqlalchemy_awaitly.__file__)"],
        cwd=clone, env=environment, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert Path(imported.strip()).is_relative_to(clone)


def test_nothing_in_the_repository_reads_beside_it() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    needles = ("../" + "shared", "shared/" + "spec")  # spelled apart: this file is tracked too
    offenders = []
    for name in tracked:
        path = ROOT / name
        if path.suffix in (".py", ".mjs", ".toml", ".ini", ".cfg", ".sh") or name == ".ci/run":
            text = path.read_text(errors="replace")
            if any(needle in text for needle in needles):
                offenders.append(name)
    assert offenders == [], offenders
