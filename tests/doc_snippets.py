"""The code blocks of README.md and docs/*.md, each with the marker saying how it is checked.

Every fenced block is preceded by one line ``<!-- snippet: KIND -->``, where KIND is
``run`` (executed as written), ``ci`` (its commands are in ``.ci/run``),
``tested-by PATH NAME`` (the test at PATH runs it, finding it by NAME), or
``not-runnable: REASON``. MyST directives (```` ```{toctree} ````) are not code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
_MARKER = re.compile(r"<!-- snippet: (.*?) -->")
_FENCE = re.compile(r"```(\S*)\s*$")


@dataclass(frozen=True)
class Snippet:
    """One fenced code block and what its marker says."""

    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    marker: str | None  # the text after "snippet:", or None if the block has no marker
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def kind(self) -> str | None:
        if self.marker is None:
            return None
        return self.marker.split(":")[0].split()[0]


def snippets(documents: tuple[Path, ...] = DOCUMENTS) -> list[Snippet]:
    """Every fenced code block of ``documents``, in order."""
    found: list[Snippet] = []
    for path in documents:
        lines = path.read_text().splitlines()
        index = 0
        while index < len(lines):
            fence = _FENCE.match(lines[index])
            if fence is None:
                index += 1
                continue
            end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
            language = fence.group(1)
            if not language.startswith("{"):
                marker = _MARKER.fullmatch(lines[index - 1].strip()) if index else None
                code = "\n".join(lines[index + 1 : end]) + "\n"
                found.append(Snippet(path, index + 1, language, marker and marker.group(1), code))
            index = end + 1
    return found


def block(name: str) -> str:
    """The code of the one block marked ``tested-by <path> <name>``."""
    named = [
        s for s in snippets() if s.kind == "tested-by" and (s.marker or "").split()[2:] == [name]
    ]
    assert len(named) == 1, f"{len(named)} blocks are named {name!r}"
    return named[0].code


def run_as_written(
    code: str, cwd: Path, database_url: str | None = None, *, label: str = "", timeout: float = 120
) -> list[str]:
    """Run ``code`` as a reader pasting it would, in ``cwd``, with ``DATABASE_URL`` only if
    given; it must exit 0. Its printed lines."""
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url is not None:
        environment["DATABASE_URL"] = database_url
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"{label}:\n{done.stdout}{done.stderr}"
    return done.stdout.splitlines()
