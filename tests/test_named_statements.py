"""Statements prepared by name on psycopg and psycopg2 (``named_statements``): used
by default, recovered when a session lacks them, never a way for a value into the SQL.

The names are what make prepared statements safe behind PgBouncer (the
transaction-pooling tests in ``test_pgbouncer.py`` run the default store);
here one pooled connection is looked at directly.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import PostgresHandle, drop_table
from databases import empty_postgres_database
from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.engine import Engine, make_url
from store_kinds import with_driver

from sqlalchemy_awaitly import AsyncSQLAlchemyKeyValueStore, SQLAlchemyKeyValueStore
from sqlalchemy_awaitly.execution import compile_ops
from sqlalchemy_awaitly.named_statements import (
    PREFIX,
    after_error,
    first_message,
    in_one_message,
    messages,
    named,
)
from sqlalchemy_awaitly.schema import workflow_state_table

ONE = {"pool_size": 1, "max_overflow": 0}

# Values that would change the statement if they reached it as SQL.
HOSTILE = [
    "it's",
    "'); DROP TABLE x; --",
    "$awaitly$; DROP TABLE x; $awaitly$",
    "$awaitly_sql$ $1 $2",
    "%s %(key)s %% %",
    "back\\slash \\' \\\\",
    "é ☃ 𝄞 " + "x" * 10_000,
    "",
]


def test_placeholders_become_numbered_parameters() -> None:
    n = named("SELECT %(a)s, %(b)s, %(a)s, '100%%' FROM t")
    assert n.execute == f"EXECUTE {n.name}(%(a)s, %(b)s)"
    assert "AS SELECT $1, $2, $1, '100%%' FROM t" in n.prepare  # % doubled for the client
    assert n.name.startswith(PREFIX) and len(n.name) <= 63
    assert named("SELECT %(a)s FROM t").name != named("SELECT %(a)s FROM u").name
    assert named("SELECT %(a)s FROM t") is named("SELECT %(a)s FROM t")  # made once
    assert named("SELECT 1").execute == f"EXECUTE {named('SELECT 1').name}"


def test_a_statement_with_the_do_blocks_quoting_tags_is_refused() -> None:
    with pytest.raises(ValueError, match="quoting tags"):
        named("SELECT '$awaitly_sql$'")


def test_the_message_puts_the_timeout_and_the_prepare_first() -> None:
    n = named("SELECT %(a)s")
    assert n.message(None, prepare=False) == (n.execute, 0)
    text_, before = n.message("250", prepare=True)
    assert before == 2
    assert text_.startswith("SELECT set_config('statement_timeout', '250', true); DO ")
    assert text_.endswith("; " + n.execute)


def test_statements_in_one_message_read_the_last_one() -> None:
    first, second = named("SELECT %(a)s"), named("SELECT %(b)s, 1")
    both = in_one_message((first, second))
    assert both.names == (first.name, second.name)
    assert both.message(None, prepare=False) == (f"{first.execute}; {second.execute}", 1)
    text_, before = both.message("250", prepare=True)
    assert before == 4  # the timeout, two DO blocks, the first EXECUTE
    assert text_.endswith(f"; {first.execute}; {second.execute}")
    assert text_.count("DO $awaitly$") == 2


class _Failed(Exception):
    """A driver's error as the flow reads it: only its SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def test_the_bare_execute_is_sent_without_the_flow_only_when_the_flow_would_send_it() -> None:
    n = named("SELECT %(a)s")
    sends, first = first_message(n, {n.name}, None)
    assert sends is None and first == next(messages(n, {n.name}, None))
    sends, first = first_message(n, set(), None)  # the flow prepares first
    assert sends is not None and first == n.message(None, prepare=True)
    sends, first = first_message(n, {n.name}, "250")  # the timeout goes in front
    assert sends is not None and first == n.message("250", prepare=False)


def test_the_flow_takes_over_after_the_bare_execute_failed() -> None:
    n = named("SELECT %(a)s")
    have = {n.name, "other"}
    sends, first = after_error(None, n, have, None, _Failed("26000"))
    assert first == n.message(None, prepare=True)  # not the bare EXECUTE again
    assert have == {"other"}  # the session lost the name
    next(sends, None)
    assert have == {n.name, "other"}
    with pytest.raises(_Failed, match="40001"):  # anything else is the statement's answer
        after_error(None, n, {n.name}, None, _Failed("40001"))
    with pytest.raises(_Failed, match="40001"):  # and from a flow already started
        started, _ = first_message(n, set(), None)
        after_error(started, n, set(), None, _Failed("40001"))


@pytest.fixture
def table(postgres: PostgresHandle, table_name: str) -> Iterator[str]:
    yield table_name
    drop_table(create_engine(postgres.url), table_name)


def prepared(store: SQLAlchemyKeyValueStore) -> set[str]:
    """The statements prepared in the store's one pooled session."""
    conn = store.engine.raw_connection()
    try:
        cur = conn.driver_connection.cursor()  # type: ignore[union-attr]
        cur.execute("SELECT name FROM pg_prepared_statements")
        return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


def in_session(store: SQLAlchemyKeyValueStore, sql: str) -> None:
    conn = store.engine.raw_connection()
    try:
        conn.driver_connection.cursor().execute(sql)  # type: ignore[union-attr]
        conn.driver_connection.commit()  # type: ignore[union-attr]
    finally:
        conn.close()


DRIVERS = ["psycopg", "psycopg2"]


def url_of(postgres: PostgresHandle, driver: str) -> str:
    return with_driver(postgres.url, driver)


@pytest.mark.postgres
@pytest.mark.parametrize("driver", DRIVERS)
def test_the_default_store_runs_its_statements_by_name(
    driver: str, postgres: PostgresHandle, table: str
) -> None:
    with SQLAlchemyKeyValueStore(url_of(postgres, driver), table_name=table, pool=ONE) as store:
        store.set("k", "v")
        assert store.get("k") == "v"
        names = prepared(store)
        mine = {n for n in names if n.startswith(PREFIX)}
        assert len(mine) >= 2, names  # set and get at least
        assert not {n for n in names if n.startswith("_pg3_")}
        for _ in range(10):
            store.get("k")
        assert {n for n in prepared(store) if n.startswith(PREFIX)} == mine  # made once


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("driver", "threshold", "expect"),
    [("psycopg", None, set()), ("psycopg2", None, set()), ("psycopg", 0, {"_pg3_"})],
)
def test_a_given_threshold_turns_names_off(
    postgres: PostgresHandle, table: str, driver: str, threshold: int | None, expect: set[str]
) -> None:
    """None: nothing prepared at all (for poolers that pin a session that prepares);
    a number: psycopg's own prepared statements, as psycopg decides."""
    with SQLAlchemyKeyValueStore(
        url_of(postgres, driver), table_name=table, pool=ONE, prepare_threshold=threshold
    ) as store:
        for _ in range(3):
            store.set("k", "v")
            assert store.get("k") == "v"
        assert {n[:5] for n in prepared(store)} == expect


@pytest.mark.postgres
@pytest.mark.parametrize("timeout", [None, 5.0])
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_session_that_lost_its_statements_prepares_them_again(
    driver: str, postgres: PostgresHandle, table: str, timeout: float | None
) -> None:
    """What PgBouncer does to a client: its next statement lands on a server session
    that never saw the prepare (or one reset by DISCARD ALL). 26000, nothing run: sent
    again with its prepare, in the same message."""
    with SQLAlchemyKeyValueStore(
        url_of(postgres, driver), table_name=table, pool=ONE, statement_timeout=timeout
    ) as store:
        store.set("lease", "tok")
        assert store.set_guarded("k", "v1", guard_key="lease", guard_value="tok")
        in_session(store, "DEALLOCATE ALL")
        assert not prepared(store)
        assert store.set_guarded("k", "v2", guard_key="lease", guard_value="tok")
        assert store.get("k") == "v2"
        assert store.add("new", "x") is True  # not repeatable: must run exactly once
        assert store.get("new") == "x"
        in_session(store, "DISCARD ALL")
        assert store.delete("new") is True
        assert store.get("new") is None
        assert {n for n in prepared(store) if n.startswith(PREFIX)}


@pytest.mark.postgres
@pytest.mark.parametrize("timeout", [None, 5.0])
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_message_of_two_statements_lacking_one_prepares_it_again(
    driver: str, postgres: PostgresHandle, table: str, timeout: float | None
) -> None:
    """``add_and_get`` sends two EXECUTEs: a session that lacks the second answers 26000
    with the first rolled back (one message, one transaction); both are sent again."""
    with SQLAlchemyKeyValueStore(
        url_of(postgres, driver), table_name=table, pool=ONE, statement_timeout=timeout
    ) as store:
        store.add("lock:0", "tok")
        alone = prepared(store)
        store.set("state", "saved")
        assert store.add_and_get("lock:1", "tok", other_key="state") == (True, "saved")
        read = prepared(store) - alone - {named_of(store, "set")}
        assert len(read) == 1, read
        in_session(store, f"DEALLOCATE {read.pop()}")
        assert store.add_and_get("lock:2", "tok", other_key="state") == (True, "saved")
        assert store.add_and_get("lock:2", "other", other_key="state") == (False, "saved")
        in_session(store, "DEALLOCATE ALL")
        assert store.add_and_get("lock:3", "tok", other_key="state") == (True, "saved")
        assert len({n for n in prepared(store) if n.startswith(PREFIX)}) == 2  # add, read
        assert store.get("lock:3") == "tok"


def named_of(store: SQLAlchemyKeyValueStore, op: str) -> str:
    """The server-side name of the store's statement ``op``."""
    compiled = compile_ops(store._statements, store.engine.dialect)  # type: ignore[arg-type]
    found = compiled[store._statements.op(op)].named  # type: ignore[union-attr]
    assert found is not None
    return found.name


@pytest.mark.postgres
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_table_dropped_and_made_again_is_found_by_name(
    driver: str, postgres: PostgresHandle, table: str
) -> None:
    """A prepared statement is planned again after DDL on its table (as after a
    migration): the name keeps working on the new table."""
    with SQLAlchemyKeyValueStore(url_of(postgres, driver), table_name=table, pool=ONE) as store:
        store.set("k", "old")
        engine = create_engine(postgres.url)
        try:
            with engine.begin() as conn:
                conn.execute(text(f"DROP TABLE {table}"))
            workflow_state_table(MetaData(), table).create(engine)
        finally:
            engine.dispose()
        assert store.get("k") is None
        store.set("k", "new")
        assert store.get("k") == "new"


@pytest.mark.postgres
@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("driver", DRIVERS)
def test_values_bound_by_the_client_arrive_as_they_were_sent(
    driver: str, postgres: PostgresHandle, table: str, value: str
) -> None:
    key = value[:200] + "key"  # keys are bounded
    with SQLAlchemyKeyValueStore(url_of(postgres, driver), table_name=table, pool=ONE) as store:
        store.set(key, value, ttl=60)
        assert store.get(key) == value
        store.set("lease", value)
        assert store.set_guarded("k", value, guard_key="lease", guard_value=value)
        assert store.get("k") == value
        assert store.delete(key) is True
        assert store.get_many([key, "k"]) == {"k": value}


@pytest.mark.postgres
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_nul_is_refused_as_on_every_other_path(
    driver: str, postgres: PostgresHandle, table: str
) -> None:
    errors = []
    for threshold in ({}, {"prepare_threshold": None}):
        with SQLAlchemyKeyValueStore(
            url_of(postgres, driver), table_name=table, **threshold
        ) as store:
            with pytest.raises(Exception) as raised:
                store.set("k", "a\x00b")
            errors.append(type(raised.value))
            assert store.get("k") is None
    assert errors[0] is errors[1], errors


def callers_engine(postgres: PostgresHandle, **connect_args: Any) -> Engine:
    url = make_url(postgres.url)
    return create_engine(url, pool_size=1, max_overflow=0, connect_args=connect_args)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("connect_args", "by_name"), [({"prepare_threshold": None}, True), ({}, False)]
)
def test_on_a_callers_engine_names_are_used_only_where_psycopg_would_not_prepare(
    postgres: PostgresHandle, table: str, connect_args: dict[str, Any], by_name: bool
) -> None:
    engine = callers_engine(postgres, **connect_args)
    try:
        store = SQLAlchemyKeyValueStore(engine=engine, table_name=table)
        for _ in range(6):  # past psycopg's default threshold of 5
            store.set("k", "v")
            assert store.get("k") == "v"
        names = prepared(store)
        assert any(n.startswith(PREFIX) for n in names) is by_name, names
        assert any(n.startswith("_pg3_") for n in names) is not by_name, names
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_asyncio_store_runs_by_name_and_recovers_the_same_way(
    postgres: PostgresHandle, table: str, loop: asyncio.AbstractEventLoop
) -> None:
    async def work() -> set[str]:
        async with AsyncSQLAlchemyKeyValueStore(
            postgres.url, table_name=table, pool=ONE, statement_timeout=5.0
        ) as store:
            await store.set("k", "v1")

            async def session(sql: str) -> list[Any]:
                async with store.engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    cur = await raw.driver_connection.execute(sql)  # type: ignore[union-attr]
                    return await cur.fetchall() if cur.description else []

            names = {r[0] for r in await session("SELECT name FROM pg_prepared_statements")}
            await session("DEALLOCATE ALL")
            await store.set("k", "v2")
            assert await store.get("k") == "v2"
            return names

    names = loop.run_until_complete(work())
    assert any(n.startswith(PREFIX) for n in names), names


@pytest.mark.postgres
@pytest.mark.parametrize("driver", [*DRIVERS, "psycopg_async"])
def test_a_database_that_refuses_the_prepare_gets_plain_statements(
    postgres: PostgresHandle,
    driver: str,
    caplog: pytest.LogCaptureFixture,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """A hardened database where the role may not use PL/pgSQL (the DO block that
    prepares): the first call says so once in the log, and every call runs unprepared."""
    role = f"noplpgsql_{uuid.uuid4().hex[:8]}"
    with empty_postgres_database(postgres.url) as database:
        admin = create_engine(database, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text("REVOKE USAGE ON LANGUAGE plpgsql FROM PUBLIC"))
                conn.execute(text(f"CREATE ROLE {role} LOGIN"))
                conn.execute(text(f"GRANT ALL ON SCHEMA public TO {role}"))
            url = make_url(with_driver(database, driver)).set(username=role, password=None)
            rendered = url.render_as_string(hide_password=False)
            with caplog.at_level(logging.WARNING, logger="sqlalchemy_awaitly"):
                if driver == "psycopg_async":

                    async def work() -> list[Any]:
                        async with AsyncSQLAlchemyKeyValueStore(rendered, pool=ONE) as store:
                            await store.set("k", "v", ttl=60)
                            await store.set("lease", "tok")
                            return [
                                await store.get("k"),
                                await store.set_guarded(
                                    "k", "w", guard_key="lease", guard_value="tok"
                                ),
                                await store.get("k"),
                            ]

                    answers = loop.run_until_complete(work())
                else:
                    with SQLAlchemyKeyValueStore(rendered, pool=ONE) as store:
                        store.set("k", "v", ttl=60)
                        store.set("lease", "tok")
                        answers = [
                            store.get("k"),
                            store.set_guarded("k", "w", guard_key="lease", guard_value="tok"),
                            store.get("k"),
                        ]
                        assert not {n for n in prepared(store) if n.startswith(PREFIX)}
            assert answers == ["v", True, "w"]
            warned = [r for r in caplog.records if "refused to prepare" in r.getMessage()]
            assert len(warned) == 1, [r.getMessage() for r in caplog.records]
            assert "permission denied for language plpgsql" in warned[0].getMessage()
        finally:
            with admin.connect() as conn:
                conn.execute(text(f"DROP OWNED BY {role}"))
            admin.dispose()
            server = create_engine(postgres.url, isolation_level="AUTOCOMMIT")
            with server.connect() as conn:
                conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
            server.dispose()
