"""Self-test of tests/pgbouncer_server.py: a real PgBouncer in both pool modes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from conftest import PostgresHandle, bouncer_for, bouncer_or_fail
from pgbouncer_server import LocalPgBouncer
from psycopg.rows import dict_row
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.postgres

CONNECT_TIMEOUT = 5


@pytest.fixture(scope="module", params=["session", "transaction"])
def bouncer(request: pytest.FixtureRequest, postgres: PostgresHandle) -> Iterator[LocalPgBouncer]:
    yield from bouncer_or_fail(postgres, request.param)


@pytest.fixture(scope="module")
def single_server_bouncer(postgres: PostgresHandle) -> Iterator[LocalPgBouncer]:
    """Transaction pooling with one server connection for all clients."""
    yield from bouncer_or_fail(postgres, "transaction", default_pool_size=1)


def connect(bouncer: LocalPgBouncer, **kwargs: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(
        bouncer.conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True, **kwargs
    )


def one(conn: psycopg.Connection[Any], sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_psycopg_answers_throughbouncer_or_fail(bouncer: LocalPgBouncer) -> None:
    with connect(bouncer) as conn:
        assert one(conn, "SELECT 1") == 1
        assert one(conn, "SELECT current_database()") == "postgres"
    assert bouncer.version >= (1, 0, 0)
    assert f":{bouncer.port}/" in bouncer.url


def test_sqlalchemy_url_answers_throughbouncer_or_fail(bouncer: LocalPgBouncer) -> None:
    engine = create_engine(bouncer.url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 41 + 1")).scalar_one() == 42
    finally:
        engine.dispose()


def test_any_database_name_passes_through(bouncer: LocalPgBouncer) -> None:
    conninfo = bouncer.conninfo.replace("dbname=postgres", "dbname=template1")
    with psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
        assert one(conn, "SELECT current_database()") == "template1"


def test_admin_console_reports_the_pool_mode(bouncer: LocalPgBouncer) -> None:
    with connect(bouncer) as conn:  # make sure the postgres pool exists
        one(conn, "SELECT 1")
    admin = bouncer.admin_conninfo
    with psycopg.connect(admin, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
        pools = conn.cursor(row_factory=dict_row).execute("SHOW POOLS").fetchall()
    (pool,) = [p for p in pools if p["database"] == "postgres"]
    assert pool["pool_mode"] == bouncer.pool_mode


def test_session_mode_gives_each_client_its_own_server(postgres: PostgresHandle) -> None:
    with bouncer_for(postgres, "session", default_pool_size=5) as bouncer:
        name = f"own_{uuid.uuid4().hex[:8]}"
        with connect(bouncer) as first, connect(bouncer) as second:
            assert one(first, "SELECT pg_backend_pid()") != one(second, "SELECT pg_backend_pid()")
            first.execute(f"SET application_name = '{name}'")
            assert one(first, "SHOW application_name") == name
            assert one(second, "SHOW application_name") != name


def test_transaction_mode_shares_one_server(single_server_bouncer: LocalPgBouncer) -> None:
    with connect(single_server_bouncer) as first, connect(single_server_bouncer) as second:
        pid = one(first, "SELECT pg_backend_pid()")
        assert one(second, "SELECT pg_backend_pid()") == pid
        assert one(first, "SELECT pg_backend_pid()") == pid


def test_transaction_mode_leaks_session_state(single_server_bouncer: LocalPgBouncer) -> None:
    """A session-level SET on one client is seen by another: the pooling is real."""
    name = f"leak_{uuid.uuid4().hex[:8]}"
    with connect(single_server_bouncer) as first, connect(single_server_bouncer) as second:
        first.execute(f"SET application_name = '{name}'")
        assert one(second, "SHOW application_name") == name
        first.execute("RESET application_name")


def test_forced_server_user_from_url(postgres: PostgresHandle) -> None:
    """A server URL's user and password become the login PgBouncer forces."""
    if postgres.server is None:
        pytest.skip("creates a role: only on the throwaway local cluster")
    role = f"bouncer_{uuid.uuid4().hex[:8]}"
    port = postgres.server.port
    url = f"postgresql+psycopg://{role}:it%27s%20secret@127.0.0.1:{port}/postgres"
    with psycopg.connect(postgres.server.conninfo, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'it''s secret'")
        try:
            with bouncer_for(url, "transaction") as bouncer:
                assert (bouncer.server_user, bouncer.server_password) == (role, "it's secret")
                with connect(bouncer) as conn:
                    assert one(conn, "SELECT current_user") == role
        finally:
            admin.execute(f"DROP ROLE {role}")
