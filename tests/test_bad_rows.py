"""Rows nobody wrote: CorruptStateError / Err(CorruptState) at that row, never a crash.

Hand-made or damaged rows (truncated, NaN, nested past what the parser
follows, fields of the wrong type) go through ``load``, ``durable.run``,
``list_pending``, ``retry_step`` and the CLI's ``list`` / ``show``, on
SQLite and PostgreSQL: each reports the one bad row, listings go on with
the others, and a large but valid row still loads.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy import text as sql
from test_cli import cli, url  # noqa: F401  (url: the fixture, an empty database per backend)

from sqlalchemy_awaitly import CorruptStateError, SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import CorruptState, Err, Ok
from sqlalchemy_awaitly.persistence import StatePersistence

GOOD = {"formatVersion": 1, "steps": {}, "execution": {"status": "running"}, "metadata": {}}
BAD_ROWS = {
    "truncated": json.dumps(GOOD)[:-7],
    "nan": '{"formatVersion":1,"steps":{"a":{"ok":true,"value":NaN}},"execution":{}}',
    "infinity": '{"formatVersion":1,"steps":{"a":{"ok":true,"value":-Infinity}},"execution":{}}',
    "deep": '{"formatVersion":1,"steps":{},"execution":{},"metadata":{"x":'
    + "[" * 100_000
    + "]" * 100_000
    + "}}",
    "version-text": json.dumps({**GOOD, "formatVersion": "1"}),
    # Named in the error: a value nested past the recursion limit has no repr.
    "version-deep": '{"formatVersion":' + "[" * 5_000 + "]" * 5_000 + ',"steps":{},"execution":{}}',
    "version-long": json.dumps({**GOOD, "formatVersion": "x" * 100_000}),
    "steps-list": json.dumps({**GOOD, "steps": []}),
    "step-without-ok": json.dumps({**GOOD, "steps": {"a": {"value": 1}}}),
    "execution-text": json.dumps({**GOOD, "execution": "running"}),
    "array": "[1, 2, 3]",
}


@pytest.fixture
def state(url: str) -> Any:  # noqa: F811
    store = SQLAlchemyKeyValueStore(url)
    persistence = StatePersistence(store)
    for name, text in BAD_ROWS.items():
        store.set(persistence.key(name), text)
    store.set(persistence.key("good"), json.dumps(GOOD))
    yield persistence
    store.close()


def test_load_run_and_retry_report_the_one_row(state: StatePersistence) -> None:
    for name in BAD_ROWS:
        with pytest.raises(CorruptStateError) as caught:
            state.load(name)
        assert caught.value.key == state.key(name)
        assert len(caught.value.reason) < 200, name
        ran: list[str] = []
        result = durable.run(
            None, lambda step, deps, ran=ran: ran.append("body"), id=name, store=state
        )
        assert isinstance(result, Err) and isinstance(result.error, CorruptState), name
        assert ran == []  # nothing executed on a row it cannot read
        with pytest.raises(CorruptStateError):
            durable.retry_step(state, name)
    assert state.load("good") == GOOD
    assert isinstance(durable.run(None, lambda step, deps: 1, id="good", store=state), Ok)


@pytest.mark.slow
def test_listings_go_on_past_bad_rows(state: StatePersistence, url: str) -> None:  # noqa: F811
    runs = {run.id: run for run in durable.list_pending(state)}
    assert set(runs) == {*BAD_ROWS, "good"}
    assert all(runs[name].corrupt for name in BAD_ROWS)
    assert runs["good"].corrupt is None
    listed = cli("list", "--url", url)
    assert listed.returncode == 6, listed.stderr
    assert f"{len(BAD_ROWS)} stored run(s) cannot be read" in listed.stderr
    states = [line.split()[1] for line in listed.stdout.splitlines()[1:]]
    assert sorted(states) == sorted(["crashed"] + ["corrupt"] * len(BAD_ROWS))
    as_json = cli("list", "--url", url, "--json")
    assert as_json.returncode == 6
    reasons = {run["id"]: run["corrupt"] for run in json.loads(as_json.stdout)}
    assert reasons["good"] is None and all(reasons[name] for name in BAD_ROWS)
    shown = cli("show", "deep", "--url", url)
    assert shown.returncode == 1 and "nested deeper" in shown.stderr
    assert "Traceback" not in listed.stderr + as_json.stderr + shown.stderr


def test_a_large_valid_row_loads(url: str) -> None:  # noqa: F811
    store = SQLAlchemyKeyValueStore(url)
    state = StatePersistence(store)
    big = {
        **GOOD,
        "steps": {f"step-{i}": {"ok": True, "value": "x" * 1000} for i in range(5000)},
    }
    try:
        state.save("big", big)  # about 5 MB
        assert state.load("big") == big
        assert [run.steps for run in durable.list_pending(state)] == [5000]
    finally:
        store.close()


def test_sqlite_rows_that_are_not_utf8_text_are_read_one_by_one(tmp_path: Any) -> None:
    """Bytes an earlier ``set_many`` stored for lone surrogates, a BLOB, bytes that are not
    UTF-8: each row is read (or reported corrupt) alone, and the surrogates come back."""
    database = f"sqlite:///{tmp_path / 'state.db'}"
    store = SQLAlchemyKeyValueStore(database)
    state = StatePersistence(store)
    resumed = {**GOOD, "steps": {"a": {"ok": True, "value": "Zoë \ud83d"}}}
    raw = json.dumps(resumed, ensure_ascii=False).encode("utf-8", "surrogatepass")
    rows = {
        state.key("surrogate"): ("CAST(:v AS TEXT)", raw),  # what set_many used to store
        state.key("blob"): (":v", json.dumps(GOOD).encode()),  # another driver's bytes
        state.key("not-utf8"): ("CAST(:v AS TEXT)", b'{"formatVersion":\xff}'),
        "Zo\xeb \ud83d": ("CAST(:v AS TEXT)", b"x"),  # a key stored the same way
    }
    engine = create_engine(database)
    try:
        store.set(state.key("good"), json.dumps(GOOD))
        with engine.begin() as conn:
            for key, (expression, value) in rows.items():
                columns = f"(CAST(:k AS TEXT), {expression}, NULL)"
                insert = f"INSERT INTO awaitly_workflow_state VALUES {columns}"
                conn.execute(sql(insert), {"k": key.encode("utf-8", "surrogatepass"), "v": value})
        assert set(store.keys("*")) == {state.key("good"), *rows}
        runs = {run.id: run for run in durable.list_pending(state)}
        assert runs["surrogate"].corrupt is None and runs["blob"].corrupt is None
        assert runs["not-utf8"].corrupt is not None
        assert state.load("blob") == GOOD
        seen: list[Any] = []
        result = durable.run(
            None,
            lambda step, deps: seen.append(step(lambda: "new", key="a")),
            id="surrogate",
            store=state,
        )
        assert isinstance(result, Ok) and seen == ["Zoë \ud83d"]
        result = durable.run(None, lambda step, deps: 1, id="not-utf8", store=state)
        assert isinstance(result, Err) and isinstance(result.error, CorruptState)
    finally:
        store.close()
        engine.dispose()
