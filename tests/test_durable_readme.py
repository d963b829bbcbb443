"""The README's and the docs' quick starts run as written and print what they say."""

from __future__ import annotations

from pathlib import Path

import pytest
from doc_snippets import block, run_as_written

pytestmark = pytest.mark.slow  # end to end, in processes of its own: pytest -m slow


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_readme_durable_run_resumes_after_a_failure(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    code = block("readme-durable-run")
    if backend == "postgresql":  # "or postgresql+psycopg://...", as its comment says
        url = request.getfixturevalue("postgres").url
        code = code.replace('"sqlite:///shop.db"', repr(url))
    lines = run_as_written(code, tmp_path)
    assert lines[0].startswith("Err(error=UnexpectedError(message='ConnectionError: payment")
    assert lines[1:] == [
        "Ok(value={'order': 'order-1', 'paid': True})",
        "['reserve-stock', 'charge-card', 'charge-card']",
    ]


def test_the_readme_store_example_prints_what_it_says(tmp_path: Path) -> None:
    assert run_as_written(block("readme-store"), tmp_path) == ["payload", "['session:1']"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_durable_quickstart_runs_as_written(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = request.getfixturevalue("postgres").url
    lines = run_as_written(block("durable-quickstart"), tmp_path, url, timeout=60)
    assert "\n".join(lines).strip() == "Ok(value={'id': 'order-1', 'userId': '123'})"


def test_the_store_quickstart_runs_as_written(tmp_path: Path) -> None:
    assert run_as_written(block("store-quickstart"), tmp_path) == [
        "{'fetch-user': {'ok': True, 'value': {'id': '123'}}}",
        "['checkout-123']",
        "payload",
        "['session:1']",
    ]
