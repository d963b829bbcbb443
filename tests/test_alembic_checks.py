"""pytest-alembic's standard checks, on the repository's own alembic.ini, on both backends.

Single head, upgrade from empty, models match the DDL (autogenerate finds
nothing), and every revision downgrades. The functions are pytest-alembic's;
importing them here runs them against the fixtures below.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.config import Config
from databases import empty_postgres_database, sqlite_file_url
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import Engine, create_engine

ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]


@pytest.fixture
def alembic_config() -> Config:
    return Config(str(ROOT / "alembic.ini"))


@pytest.fixture(params=["postgresql", "sqlite"])
def alembic_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = create_engine(sqlite_file_url(tmp_path))
        yield engine
        engine.dispose()
        return
    with empty_postgres_database(request.getfixturevalue("postgres").url) as url:
        engine = create_engine(url)
        yield engine
        engine.dispose()
