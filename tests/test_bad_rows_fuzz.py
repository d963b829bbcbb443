"""Fuzz of hand-made rows: whatever a row holds, only our error types, and listings go on.

Rows are written past the store (plain SQL), so nothing refuses them: good
snapshots of either format with one part replaced by arbitrary JSON (deep
nesting included), text cut short or with a token put in (``NaN``,
``Infinity``, ``1e400``, a stray bracket), nesting at and past the read
limit, valid rows of several MB, and on SQLite bytes that are not UTF-8 and
BLOBs. Each row goes through ``load``, ``durable.run`` (sync, and asyncio on
PostgreSQL), ``list_pending`` and the CLI's ``list`` and ``show``: a row is
either read (and then the run ends Ok or with the step error it holds) or is
``CorruptStateError`` / ``Err(CorruptState)`` for itself alone.

Budget: 25 examples per test (``FUZZ_EXAMPLES`` raises it), about 45 s in all here.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import PostgresHandle, drop_table
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, text

from sqlalchemy_awaitly import (
    AsyncSQLAlchemyKeyValueStore,
    CorruptStateError,
    SQLAlchemyKeyValueStore,
    durable,
)
from sqlalchemy_awaitly.cli import main as cli_main
from sqlalchemy_awaitly.cli.errors import CORRUPT_ROWS
from sqlalchemy_awaitly.durable import CorruptState, Err, Ok, UnexpectedError, VersionMismatch
from sqlalchemy_awaitly.persistence import AsyncStatePersistence, StatePersistence
from sqlalchemy_awaitly.wire import json_text
from sqlalchemy_awaitly.wire.documents import version_of
from sqlalchemy_awaitly.wire.json_text import MAX_DEPTH

pytestmark = pytest.mark.slow  # end to end, in processes of its own: pytest -m slow

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
TABLE = "fuzz_rows"
GOOD_ID = "good"
FUZZ_ID = "fuzz"
GOOD = {"formatVersion": 1, "steps": {}, "execution": {"status": "running"}, "metadata": {}}

SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["\ud83d", "Zoë \ud83d", "\udcff", "\x00", "1e400"]),
)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


class Made(list[Any]):
    """A deep value that Hypothesis prints as the call that made it: its printer
    recurses once per level, and a RecursionError there would hide the failure."""

    call = ""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.call)


class MadeDict(dict[str, Any]):
    __doc__ = Made.__doc__
    call = ""
    _repr_pretty_ = Made._repr_pretty_


def nested(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth - 1):
        value = [value]
    made = Made([value])
    made.call = f"nested({depth}, {leaf!r})"
    return made


DEEP = st.builds(
    nested, st.sampled_from([5, 999, 1_001, 4_200, MAX_DEPTH - 10]), st.sampled_from([0, {}, "x"])
)
ANY_VALUE = st.one_of(JSON, JSON, JSON, JSON, DEEP)  # deep parts are slow to read: fewer


def outcome_of(ok: bool, value: Any, error: Any, cause: Any, origin: Any) -> Any:
    if ok:
        return {"ok": True, "value": value}
    return {"ok": False, "error": error, "cause": cause, "meta": {"origin": origin}}


CAUSE = st.one_of(
    ANY_VALUE,
    st.fixed_dictionaries(
        {"type": st.sampled_from(["error", "thrown", "value", 7])},
        optional={
            "name": ANY_VALUE,
            "message": ANY_VALUE,
            "stack": ANY_VALUE,
            "cause": ANY_VALUE,
            "originalType": ANY_VALUE,
            "value": ANY_VALUE,
            "stringRepresentation": ANY_VALUE,
        },
    ),
    st.builds(
        lambda depth: nested_cause(depth),
        st.sampled_from([50, 1_500]),
    ),
)
ERROR = st.one_of(
    ANY_VALUE,
    st.fixed_dictionaries({"_tag": st.just("UnexpectedError")}, optional={"message": ANY_VALUE}),
)
OUTCOME = st.builds(
    outcome_of,
    st.booleans(),
    ANY_VALUE,
    ERROR,
    CAUSE,
    st.one_of(st.sampled_from(["result", "throw"]), ANY_VALUE),
)


def nested_cause(depth: int) -> Any:
    cause: Any = {"type": "error", "name": "Error", "message": "bottom"}
    for i in range(depth):
        cause = {"type": "error", "name": "Error", "message": str(i), "cause": cause}
    made = MadeDict(cause)
    made.call = f"nested_cause({depth})"
    return made


SNAPSHOT = st.fixed_dictionaries(
    {
        "formatVersion": st.just(1),
        "steps": st.dictionaries(st.sampled_from(["a", "b", "c"]), OUTCOME, max_size=3),
        "execution": st.fixed_dictionaries(
            {"status": st.sampled_from(["running", "failed"])},
            optional={"lastUpdated": ANY_VALUE, "currentStepId": ANY_VALUE},
        ),
        "metadata": st.fixed_dictionaries(
            {}, optional={"version": st.one_of(st.just(1), ANY_VALUE), "input": ANY_VALUE}
        ),
    },
    optional={"workflowName": ANY_VALUE},
)
LEGACY = st.fixed_dictionaries(
    {
        "version": st.just(1),
        "entries": st.dictionaries(
            st.sampled_from(["a", "b"]),
            st.one_of(
                ANY_VALUE,
                st.fixed_dictionaries(
                    {"result": st.one_of(OUTCOME, ANY_VALUE)},
                    optional={"meta": st.one_of(ANY_VALUE, st.just({"origin": "throw"}))},
                ),
            ),
            max_size=2,
        ),
    },
    optional={"metadata": ANY_VALUE},
)
PATHS = [
    ("formatVersion",),
    ("steps",),
    ("steps", "a"),
    ("steps", "a", "ok"),
    ("execution",),
    ("execution", "status"),
    ("metadata",),
    ("metadata", "version"),
]


def replaced(document: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """``document`` with the part at ``path`` replaced (or added) by ``value``."""
    copy = json_text.copy_of(document)
    target = copy
    for part in path[:-1]:
        if not isinstance(target.get(part), dict):
            target[part] = {}
        target = target[part]
    target[path[-1]] = value
    return copy


def json_of(document: Any) -> str:
    """JSON text as Node or a hand would write it (lone surrogates escaped), any depth."""
    return json_text.dumps(document)


def spliced(text: str, at: int, token: str) -> str:
    at = at % (len(text) + 1)
    return text[:at] + token + text[at:]


TEXT_ROW = st.one_of(
    st.builds(json_of, SNAPSHOT),
    st.builds(json_of, LEGACY),
    st.builds(
        lambda d, p, v: json_of(replaced(d, p, v)), SNAPSHOT, st.sampled_from(PATHS), ANY_VALUE
    ),
    st.builds(lambda d, n: json_of(d)[: n % len(json_of(d))], SNAPSHOT, st.integers(0, 10**6)),
    st.builds(
        lambda d, n, token: spliced(json_of(d), n, token),
        SNAPSHOT,
        st.integers(0, 10**6),
        st.sampled_from(["NaN", "-Infinity", "1e400", "[", "}", ",", '"', "\\", "\\ud83d"]),
    ),
    st.builds(
        lambda n: (
            '{"formatVersion":1,"steps":{},"execution":{},"metadata":{"x":'
            + "[" * n
            + "]" * n
            + "}}"
        ),
        st.sampled_from([MAX_DEPTH - 5, MAX_DEPTH + 5, 100_000]),
    ),
    st.builds(
        lambda mb: json_of(replaced(GOOD, ("steps", "a"), {"ok": True, "value": "x" * (mb << 20)})),
        st.integers(1, 5),
    ),
    st.text(max_size=30).map(
        lambda t: t.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    ),
)
# SQLite only: what other writers put in a TEXT column.
RAW_ROW = st.one_of(
    st.binary(max_size=40).map(lambda b: ("blob", b)),
    st.builds(
        lambda d, n, junk: ("text", json_of(d).encode()[: n % 50] + junk),
        SNAPSHOT,
        st.integers(0, 10**6),
        st.sampled_from([b"\xff", b"\xed\xa0\xbd", b"\xc3", b"\x80"]),
    ),
    st.builds(
        lambda d: (
            "text",
            json_of(d).replace("\\ud83d", "\udcff").encode("utf-8", "surrogatepass"),
        ),
        SNAPSHOT,
    ),
)


def body(step: Any, deps: Any) -> Any:
    return [step(lambda: 1, key="a"), step(lambda: 2, key="b")]


async def async_body(step: Any, deps: Any) -> Any:
    async def fresh(value: int) -> int:
        return value

    return [await step(lambda: fresh(1), key="a"), await step(lambda: fresh(2), key="b")]


def check_run(result: Any, loaded: Any) -> None:
    """``run`` answers what the row holds: CorruptState for a row ``load`` refused, else the
    version mismatch, the first stored step error, or the steps' values."""
    assert isinstance(result, (Ok, Err)), result
    if isinstance(loaded, CorruptStateError):
        assert isinstance(result, Err) and isinstance(result.error, CorruptState), result
        assert result.error.key == loaded.key
        return
    if version_of(loaded) != 1:
        assert isinstance(result, Err) and isinstance(result.error, VersionMismatch), result
        return
    values = []
    for key, fresh in (("a", 1), ("b", 2)):
        outcome = loaded["steps"].get(key)
        if outcome is not None and not outcome["ok"]:
            assert isinstance(result, Err), result
            stored = outcome.get("error")
            if isinstance(stored, dict) and stored.get("_tag") == "UnexpectedError":
                assert isinstance(result.error, UnexpectedError), result
                assert "RecursionError" not in result.error.message
            else:
                assert json_text.same(result.error, stored)
            assert not isinstance(result.cause, RecursionError)
            return
        values.append(fresh if outcome is None else outcome.get("value"))
    assert isinstance(result, Ok) and json_text.same(result.value, values)


class Bench:
    """A table, its stores, and how to put a row in it past every check."""

    def __init__(self, url: str, engine: Engine, loop: asyncio.AbstractEventLoop | None) -> None:
        self.url = url
        self.engine = engine
        self.state = StatePersistence(SQLAlchemyKeyValueStore(url, table_name=TABLE))
        self.loop = loop
        self.async_state = None
        if loop is not None:
            self.async_state = AsyncStatePersistence(
                AsyncSQLAlchemyKeyValueStore(url, table_name=TABLE)
            )
        self.state.store.set(self.state.key(GOOD_ID), json.dumps(GOOD))

    def put(self, value: str | bytes, as_blob: bool = False) -> None:
        sql = (
            "INSERT INTO {t} (key, value) VALUES (:k, {v})"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        expression = ":v" if isinstance(value, str) or as_blob else "CAST(:v AS TEXT)"
        with self.engine.begin() as conn:
            conn.execute(
                text(sql.format(t=TABLE, v=expression)), {"k": self.state.key(FUZZ_ID), "v": value}
            )

    def close(self) -> None:
        self.state.store.close()
        if self.async_state is not None and self.loop is not None:
            self.loop.run_until_complete(self.async_state.store.close())


def exercise(bench: Bench, row: str | bytes) -> None:
    try:
        loaded: Any = bench.state.load(FUZZ_ID)
    except CorruptStateError as e:
        assert e.key == bench.state.key(FUZZ_ID)
        loaded = e
    else:
        assert loaded is not None and loaded["formatVersion"] == 1

    runs = {run.id: run for run in durable.list_pending(bench.state)}
    assert runs[GOOD_ID].corrupt is None
    assert (runs[FUZZ_ID].corrupt is not None) == isinstance(loaded, CorruptStateError)
    corrupt = isinstance(loaded, CorruptStateError)
    assert (runs[FUZZ_ID].state is durable.RunState.CORRUPT) == corrupt

    listed = CliRunner().invoke(cli_main, ["list", "--url", bench.url, "--table", TABLE, "--json"])
    assert listed.exit_code == (CORRUPT_ROWS if isinstance(loaded, CorruptStateError) else 0), (
        listed.output
    )
    assert listed.exception is None or isinstance(listed.exception, SystemExit), listed.exception
    shown = CliRunner().invoke(cli_main, ["show", FUZZ_ID, "--url", bench.url, "--table", TABLE])
    assert shown.exception is None or isinstance(shown.exception, SystemExit), shown.exception
    assert (shown.exit_code == 0) == (not isinstance(loaded, CorruptStateError)), shown.output

    check_run(durable.run(None, body, id=FUZZ_ID, store=bench.state), loaded)
    if bench.async_state is not None and bench.loop is not None:
        bench.put(row)  # as it was before the sync run
        run = durable.run_async(None, async_body, id=FUZZ_ID, store=bench.async_state)
        check_run(bench.loop.run_until_complete(run), loaded)


SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
    database=None,
)


@pytest.fixture(scope="module")
def sqlite_bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz-rows') / 'state.db'}"
    engine = create_engine(url)
    bench = Bench(url, engine, None)
    yield bench
    bench.close()
    engine.dispose()


@pytest.fixture(scope="module")
def postgres_bench(postgres: PostgresHandle) -> Iterator[Bench]:
    engine = create_engine(postgres.url)
    loop = asyncio.new_event_loop()
    bench = Bench(postgres.url, engine, loop)
    yield bench
    bench.close()
    loop.close()
    drop_table(engine, TABLE)
    engine.dispose()


def failed_step(cause: Any, error: Any = "declined") -> str:
    outcome = {"ok": False, "error": error, "cause": cause, "meta": {"origin": "throw"}}
    return json_of(replaced(GOOD, ("steps", "a"), outcome))


# Rows hypothesis might not reach in its budget, always tried first.
KNOWN = [
    failed_step(nested_cause(1_500)),  # was RecursionError inside the run
    failed_step({"type": "error", "name": nested(4_200), "message": {"x": 1}}),
    failed_step(None, {"_tag": "UnexpectedError", "message": nested(4_200)}),
    '{"formatVersion":1,"steps":{"a":{"ok":true,"value":1e400}},"execution":{}}',
    json_of(replaced(GOOD, ("metadata", "version"), "2")),  # not a number: version 1
]


def known(test: Any) -> Any:
    for row in KNOWN:
        test = example(row=row)(test)
    return test


@SETTINGS
@known
@given(row=TEXT_ROW)
def test_sqlite_rows(sqlite_bench: Bench, row: str) -> None:
    sqlite_bench.put(row)
    exercise(sqlite_bench, row)


@SETTINGS
@given(row=RAW_ROW)
def test_sqlite_rows_other_writers_leave(sqlite_bench: Bench, row: tuple[str, bytes]) -> None:
    kind, raw = row
    sqlite_bench.put(raw, as_blob=kind == "blob")
    exercise(sqlite_bench, raw)


@pytest.mark.postgres
@SETTINGS
@known
@given(row=TEXT_ROW)
def test_postgres_rows(postgres_bench: Bench, row: str) -> None:
    postgres_bench.put(row)
    exercise(postgres_bench, row)
