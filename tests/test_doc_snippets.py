"""Every code block of the README and docs/ runs as written or says why it cannot."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from doc_snippets import ROOT, Snippet, block, run_as_written, snippets
from sqlalchemy import MetaData
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from sqlalchemy_awaitly import workflow_state_table

ALL = snippets()
RUNNABLE = [s for s in ALL if s.kind == "run"]


def test_the_documents_have_code_blocks() -> None:
    assert len(ALL) >= 15 and len(RUNNABLE) >= 4  # the parser found them


@pytest.mark.parametrize("snippet", ALL, ids=lambda s: s.where)
def test_every_block_says_how_it_is_checked(snippet: Snippet) -> None:
    marker = snippet.marker
    assert marker is not None, f"{snippet.where}: no <!-- snippet: ... --> line above the block"
    kind = snippet.kind
    if kind == "run":
        assert marker == "run" and snippet.language == "python", snippet.where
    elif kind == "ci":
        assert marker == "ci" and snippet.language == "sh", snippet.where
    elif kind == "tested-by":
        _, path, name = marker.split()
        assert name in (ROOT / path).read_text(), f"{snippet.where}: {path} never names {name}"
        assert block(name) == snippet.code
    else:
        reason = marker.removeprefix("not-runnable:").strip()
        assert marker.startswith("not-runnable:") and reason, f"{snippet.where}: {marker!r}"
    # Whatever the kind, a block is at least well formed.
    if snippet.language == "python":
        compile(snippet.code, snippet.where, "exec")
    elif snippet.language == "json":
        json.loads(snippet.code)


@pytest.mark.parametrize("snippet", RUNNABLE, ids=lambda s: s.where)
def test_runnable_blocks_run_as_written(snippet: Snippet, tmp_path: Path) -> None:
    """In an empty directory with no DATABASE_URL, as a reader pasting it would run it."""
    run_as_written(snippet.code, tmp_path, label=snippet.where)


def _command(line: str) -> str:
    return re.sub(r"\s+#.*$", "", line).strip()


def test_the_commands_the_readme_gives_are_what_ci_runs() -> None:
    ci = {_command(line) for line in (ROOT / ".ci" / "run").read_text().splitlines()}
    given = [_command(line) for s in ALL if s.kind == "ci" for line in s.code.splitlines()]
    assert given, "no block is marked ci"
    missing = [command for command in given if command and command not in ci]
    assert not missing, f"given in the docs but not run by .ci/run: {missing}"


def _words(sql: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", sql)


def test_the_table_ddl_in_the_docs_is_what_the_model_creates() -> None:
    table = workflow_state_table(MetaData())
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    created = [str(CreateTable(table).compile(dialect=dialect)).strip() + ";"]
    created += [str(CreateIndex(index).compile(dialect=dialect)) + ";" for index in table.indexes]
    assert _words(block("table-ddl")) == _words("\n".join(created))
