"""Sphinx configuration: the docs are MyST Markdown, built with warnings as errors in CI."""

from __future__ import annotations

project = "sqlalchemy-awaitly"
author = "sqlalchemy-awaitly contributors"
copyright = "2026, sqlalchemy-awaitly contributors"

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
# Links such as [Alembic](alembic.md#owning-the-table) resolve to headings, as on GitHub.
myst_heading_anchors = 3
html_theme = "furo"
html_title = "sqlalchemy-awaitly"
