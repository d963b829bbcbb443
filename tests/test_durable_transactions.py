"""Transactional steps: the step's writes and its checkpoint commit together, or neither.

On PostgreSQL and SQLite, sync and asyncio, with a Connection and a Session.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from durable_harness import Env, Tx
from sqlalchemy import Column, Integer, MetaData, Table, Text, create_engine, func, insert, select

from sqlalchemy_awaitly.durable import Err, Ok

effects = Table(
    "durable_effects",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("step", Text, nullable=False),
)


pytestmark = pytest.mark.parametrize(
    "durable_env",
    ["postgresql-sync", "postgresql-async", "sqlite-sync", "sqlite-async"],
    indirect=True,
)


@pytest.fixture
def env(durable_env: Env) -> Any:
    url = str(durable_env.store.engine.url.render_as_string(hide_password=False))
    url = url.replace("+aiosqlite", "").replace("+psycopg", "+psycopg")
    engine = create_engine(url)
    effects.drop(engine, checkfirst=True)
    effects.create(engine)
    durable_env.effects_engine = engine  # type: ignore[attr-defined]
    yield durable_env
    effects.drop(engine, checkfirst=True)
    engine.dispose()


def effect_count(env: Any, step: str | None = None) -> int:
    query = select(func.count()).select_from(effects)
    if step is not None:
        query = query.where(effects.c.step == step)
    with env.effects_engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def write(step: str, then: Any = None) -> Any:
    def fn(resource: Any) -> Any:
        resource.execute(insert(effects).values(step=step))
        if isinstance(then, BaseException):
            raise then
        return then if then is not None else step

    return fn


@pytest.mark.parametrize("session", [False, True], ids=["connection", "session"])
def test_writes_and_checkpoint_commit_together(env: Any, session: bool) -> None:
    def body(deps: Any) -> Any:
        yield Tx("charge", write("charge"), session)
        yield "stop", lambda: Err("later failure")

    assert env.run(body, id="tx-1") == Err("later failure", None)
    assert effect_count(env, "charge") == 1
    stored = json.loads(env.row("tx-1"))
    assert stored["steps"]["charge"] == {"ok": True, "value": "charge"}
    # A rerun replays the transactional step: no second write.
    env.run(body, id="tx-1")
    assert effect_count(env, "charge") == 1


@pytest.mark.parametrize("session", [False, True], ids=["connection", "session"])
def test_a_raising_step_rolls_back_its_writes_and_records_the_failure(
    env: Any, session: bool
) -> None:
    def body(deps: Any) -> Any:
        yield Tx("charge", write("charge", RuntimeError("declined")), session)

    result = env.run(body, id="tx-2")
    assert isinstance(result, Err) and isinstance(result.cause, RuntimeError)
    assert effect_count(env) == 0
    assert json.loads(env.row("tx-2"))["steps"]["charge"]["meta"] == {"origin": "throw"}


def test_a_step_returning_err_rolls_back_too(env: Any) -> None:
    def body(deps: Any) -> Any:
        yield Tx("charge", write("charge", Err("DECLINED")))

    assert env.run(body, id="tx-3") == Err("DECLINED", None)
    assert effect_count(env) == 0
    assert json.loads(env.row("tx-3"))["steps"]["charge"]["error"] == "DECLINED"


def test_session_commit_inside_the_step_does_not_escape_the_transaction(env: Any) -> None:
    def sneaky(session: Any) -> Any:
        session.execute(insert(effects).values(step="sneaky"))
        session.commit()
        raise RuntimeError("after commit")

    def body(deps: Any) -> Any:
        yield Tx("sneaky", sneaky, session=True)

    env.run(body, id="tx-4")
    assert effect_count(env) == 0


def test_an_interrupt_rolls_back_and_records_nothing(env: Any) -> None:
    if env.flavour == "async":
        import asyncio

        interrupt: BaseException = asyncio.CancelledError()
    else:
        interrupt = KeyboardInterrupt()

    def body(deps: Any) -> Any:
        yield "first", lambda: 1
        yield Tx("charge", write("charge", interrupt))

    with pytest.raises(type(interrupt)):
        env.run(body, id="tx-5")
    assert effect_count(env) == 0
    assert list(json.loads(env.row("tx-5"))["steps"]) == ["first"]

    def fixed(deps: Any) -> Any:
        yield "first", lambda: 1
        return (yield Tx("charge", write("charge")))

    assert env.run(fixed, id="tx-5") == Ok("charge")
    assert effect_count(env) == 1
