"""Behind a real PgBouncer, in transaction and session pooling: right answers under load.

Several processes share few server connections. Each starts its store at the
same moment on a new table (auto-create through the bouncer), then checks
the answer of every call; durable runs with leases and transactional steps
end ``Ok``; no advisory lock is left behind. A control run with server-side
prepared statements shows that this load does break an unsafe setting.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import PostgresHandle, bouncer_or_fail, drop_table, raw_rows
from pgbouncer_server import LocalPgBouncer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import Ok

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PROCESSES = 6
ROUNDS = 120
JOIN_SECONDS = 120


@pytest.fixture(scope="module", params=["transaction", "session"])
def bouncer(request: pytest.FixtureRequest, postgres: PostgresHandle) -> Iterator[LocalPgBouncer]:
    # Few server connections for many clients: statements of different
    # clients meet on the same server session.
    yield from bouncer_or_fail(postgres, request.param, default_pool_size=2)


def _kv_worker(url: str, table: str, n: int, start: Any, out: Any) -> None:
    try:
        start.wait(30)
        with SQLAlchemyKeyValueStore(url, table_name=table) as store:
            wrong: list[str] = []
            for i in range(ROUNDS):
                key, value = f"p{n}:{i % 10}", f"{n}:{i}"
                store.set(key, value)
                answers = {
                    "get": (store.get(key), value),
                    "add": (store.add(f"p{n}:add:{i}", "x"), True),
                    "delete": (store.delete(f"p{n}:add:{i}"), True),
                    "get_many": (store.get_many([key]), {key: value}),
                    "exists": (store.exists(f"p{n}:add:{i}"), False),
                }
                wrong += [
                    f"{name} {got!r} != {want!r}"
                    for name, (got, want) in answers.items()
                    if got != want
                ]
        out.send(("ok", wrong[:5], len(wrong)))
    except BaseException as e:
        out.send(("error", repr(e)[:500], 1))


def _crowd(target: Any, *args: Any) -> list[tuple[str, Any, int]]:
    """Run ``target(*args, n, start, out)`` in PROCESSES forked children at once."""
    context = multiprocessing.get_context("fork")
    start = context.Event()
    pipes = [context.Pipe(duplex=False) for _ in range(PROCESSES)]
    children = [
        context.Process(target=target, args=(*args, n, start, send))
        for n, (_, send) in enumerate(pipes)
    ]
    for child in children:
        child.start()
    start.set()
    results = []
    try:
        for (receive, _), child in zip(pipes, children, strict=True):
            if not receive.poll(JOIN_SECONDS):
                results.append(("hung", f"process {child.pid} gave no answer", 1))
                continue
            results.append(receive.recv())
    finally:
        for child in children:
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join(10)
    return results


def _in_threads(work: Callable[[int], None], count: int) -> None:
    """``work(n)`` in ``count`` threads at once; fails on a thread that hangs or raises."""
    errors: list[BaseException] = []

    def each(n: int) -> None:
        try:
            work(n)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=each, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_SECONDS)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def _no_advisory_locks(postgres: PostgresHandle) -> None:
    rows = raw_rows(postgres.url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    assert rows == [(0,)], "an advisory lock was left behind"


def test_many_processes_get_right_answers(
    bouncer: LocalPgBouncer, postgres: PostgresHandle, table_name: str
) -> None:
    try:
        results = _crowd(_kv_worker, bouncer.url, table_name)
        assert [r for r in results if r[0] != "ok" or r[2]] == []
        _no_advisory_locks(postgres)
    finally:
        drop_table(create_engine(postgres.url), table_name)


def test_the_control_server_side_prepares_do_break_transaction_pooling(
    bouncer: LocalPgBouncer, postgres: PostgresHandle, table_name: str
) -> None:
    """The same crowd, with psycopg preparing every statement: it must fail here."""
    if bouncer.pool_mode != "transaction":
        pytest.skip("session pooling keeps prepared statements with their session")
    url = make_url(bouncer.url).update_query_dict({"prepare_threshold": "0"})
    try:
        results = _crowd(_kv_worker, url.render_as_string(hide_password=False), table_name)
        failed = [r for r in results if r[0] != "ok" or r[2]]
        assert failed, "prepared statements went through transaction pooling unharmed"
    finally:
        drop_table(create_engine(postgres.url), table_name)


effects_ddl = "CREATE TABLE IF NOT EXISTS bouncer_effects (run text NOT NULL)"


def _durable_worker(url: str, table: str, n: int, start: Any, out: Any) -> None:
    try:
        start.wait(30)
        outcomes = []
        with SQLAlchemyKeyValueStore(url, table_name=table) as store:
            for i in range(8):
                run_id = f"r{n}-{i}"

                def workflow(step: Any, deps: Any, run_id: str = run_id) -> Any:
                    def write(conn: Any) -> str:
                        conn.execute(
                            text("INSERT INTO bouncer_effects (run) VALUES (:r)"), {"r": run_id}
                        )
                        return run_id

                    step.transaction(write, key="write")
                    first = step(lambda: 1, key="one")
                    return first + step(lambda: 2, key="two")

                outcomes.append(durable.run(None, workflow, id=run_id, store=store))
        wrong = [repr(o) for o in outcomes if o != Ok(3)]
        out.send(("ok", wrong[:3], len(wrong)))
    except BaseException as e:
        out.send(("error", repr(e)[:500], 1))


def test_durable_runs_with_leases_and_transactional_steps(
    bouncer: LocalPgBouncer, postgres: PostgresHandle, table_name: str
) -> None:
    engine = create_engine(postgres.url)
    with engine.begin() as conn:
        conn.execute(text(effects_ddl))
        conn.execute(text("DELETE FROM bouncer_effects"))
    try:
        results = _crowd(_durable_worker, bouncer.url, table_name)
        assert [r for r in results if r[0] != "ok" or r[2]] == []
        assert raw_rows(postgres.url, "SELECT count(*) FROM bouncer_effects") == [(PROCESSES * 8,)]
        assert raw_rows(postgres.url, f"SELECT count(*) FROM {table_name}") == [(0,)]
        _no_advisory_locks(postgres)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS bouncer_effects"))
        drop_table(engine, table_name)
        engine.dispose()


def test_a_callers_engine_that_prepares_is_left_alone_and_the_store_does_not(
    bouncer: LocalPgBouncer, postgres: PostgresHandle, table_name: str
) -> None:
    """The caller's psycopg engine keeps psycopg's default threshold; with
    ``prepare_threshold=None`` the store opts out per statement instead."""
    engine = create_engine(bouncer.url, pool_size=2, max_overflow=0)  # the bouncer's own size
    store = SQLAlchemyKeyValueStore(engine=engine, table_name=table_name, prepare_threshold=None)

    def work(n: int) -> None:
        for i in range(150):
            store.set(f"t{n}", str(i))
            assert store.get(f"t{n}") == str(i)
            assert store.add(f"t{n}:{i}", "x") is True

    try:
        _in_threads(work, 4)
        with engine.connect() as conn:
            threshold = conn.connection.driver_connection.prepare_threshold  # type: ignore[union-attr]
        assert threshold == 5  # the caller's own setting, untouched
    finally:
        store.close()
        engine.dispose()
        drop_table(create_engine(postgres.url), table_name)


def test_named_statements_go_through_transaction_pooling(
    bouncer: LocalPgBouncer, postgres: PostgresHandle, table_name: str
) -> None:
    """The default store's statements by name: 8 client connections take turns on 2
    server sessions, so a statement often lands on a session that never saw it
    (or saw it from another client) and is prepared there again; every answer stays
    right, and the server sessions hold the named statements."""
    if bouncer.pool_mode != "transaction":
        pytest.skip("session pooling gives each client a session of its own to keep")
    store = SQLAlchemyKeyValueStore(
        bouncer.url, table_name=table_name, pool={"pool_size": 8, "max_overflow": 0}
    )

    def work(n: int) -> None:
        store.set(f"lease{n}", "tok")
        for i in range(100):
            assert store.set_guarded(f"t{n}", str(i), guard_key=f"lease{n}", guard_value="tok")
            assert store.get(f"t{n}") == str(i)
            assert store.add(f"t{n}:{i}", "x") is True
            assert store.delete(f"t{n}:{i}") is True
            # Two EXECUTEs in one message: a session may hold one name and not the other.
            pair = store.add_and_get(f"l{n}:{i}", "tok", 60, other_key=f"t{n}")
            assert pair == (True, str(i))
            assert store.add_and_get(f"l{n}:{i}", "other", 60, other_key=f"t{n}") == (
                False,
                str(i),
            )

    try:
        _in_threads(work, 8)
        held = raw_rows(
            bouncer.url, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'awaitly%'"
        )
        assert held[0][0] > 0, "no named statement on the server session behind the bouncer"
    finally:
        store.close()
        drop_table(create_engine(postgres.url), table_name)
