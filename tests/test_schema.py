"""One table definition: the model, a host's own MetaData, and what auto-create builds."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.schema import CreateIndex, CreateTable

from sqlalchemy_awaitly import WorkflowState, workflow_state_table


class HostBase(DeclarativeBase):
    pass


def _ddl(table, dialect) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(CreateTable(table).compile(dialect=dialect)).strip()] + [
        str(CreateIndex(i).compile(dialect=dialect)) for i in table.indexes
    ]


def test_host_metadata_gets_the_same_table_under_its_own_name_and_schema() -> None:
    hosted = workflow_state_table(HostBase.metadata, "app_state", schema="ops")
    assert hosted.metadata is HostBase.metadata
    assert hosted.fullname == "ops.app_state"
    model = WorkflowState.__table__
    pg = postgresql.psycopg.dialect()
    expected = [
        statement.replace("awaitly_workflow_state", "ops.app_state").replace(
            "idx_ops.app_state", "idx_app_state"
        )
        for statement in _ddl(model, pg)
    ]
    assert _ddl(hosted, pg) == expected
    lite = sqlite.dialect()
    assert [str(c.type.compile(lite)) for c in hosted.c] == [
        str(c.type.compile(lite)) for c in model.c
    ]


def test_postgresql_ddl_has_the_c_key_timestamptz_and_partial_index() -> None:
    create, index = _ddl(WorkflowState.__table__, postgresql.psycopg.dialect())
    assert 'key TEXT COLLATE "C" NOT NULL' in create
    assert "expires_at TIMESTAMP WITH TIME ZONE" in create
    assert "PRIMARY KEY (key)" in create
    assert index == (
        "CREATE INDEX idx_awaitly_workflow_state_expires_at ON awaitly_workflow_state "
        "(expires_at) WHERE expires_at IS NOT NULL"
    )


def test_two_metadata_do_not_share_tables() -> None:
    first, second = MetaData(), MetaData()
    assert workflow_state_table(first) is not workflow_state_table(second)
