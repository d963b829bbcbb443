"""Prefix scans on PostgreSQL use the primary key, also under generic plans.

``keys("workflow:state:*")`` and ``StatePersistence.list()`` must cost
O(log n + matches) on tables this package creates, even though the database's
default collation is not C (here C.UTF-8, which PostgreSQL does not treat as C)
and even when psycopg has prepared the statement and PostgreSQL runs it with a
generic plan (where ``LIKE $1`` can never use an index). The store's key column
is ``COLLATE "C"`` and its scans are key ranges, so the planner has a range on
the primary key in every case.

The plans below are those of the SQL the store itself runs, on 200,000 rows
of which 1% are under ``workflow:state:``: with the values (a custom plan) and
as a prepared statement forced to a generic plan. The control: the same rows in
a table whose key has the database's default collation, where ``LIKE $1`` and
even the store's range statement can only scan the whole table.

Run with ``-s`` to see the plans.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import make_url
from sqlalchemy.sql.elements import ClauseElement

from sqlalchemy_awaitly import DEFAULT_PREFIX, SQLAlchemyKeyValueStore, create_state_persistence

ROWS = 200_000
STATE_EVERY = 100  # 1% of the keys are under workflow:state:
X_EVERY = 1_000  # of those, one in ten also ends with ":x"
STATE_KEYS = ROWS // STATE_EVERY
X_KEYS = ROWS // X_EVERY
OTHER_PREFIXES = ("cache:", "lease:", "other:", "zz:")  # sorting before and after workflow:

INDEX_SCANS = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}

FILL = """
INSERT INTO {table} (key, value)
SELECT CASE
         WHEN i % {state_every} = 0
           THEN 'workflow:state:run-' || lpad(i::text, 6, '0')
                || CASE WHEN i % {x_every} = 0 THEN ':x' ELSE '' END
         ELSE ({others})[i % {n_others} + 1] || md5(i::text)
       END,
       '{{"status":"running"}}'
FROM generate_series(1, {rows}) AS i
"""


def conninfo(url: str) -> str:
    """The libpq URL for psycopg from the SQLAlchemy ``postgresql+psycopg://`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class Loaded:
    conninfo: str
    store: SQLAlchemyKeyValueStore
    table: str
    pkey: str
    control: str
    control_pkey: str


def primary_key_name(conn: psycopg.Connection[Any], table: str) -> str:
    row = conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
        [table],
    ).fetchone()
    assert row is not None, table
    name: str = row[0]
    return name


@pytest.fixture(scope="module")
def loaded(postgres: Any) -> Iterator[Loaded]:
    suffix = uuid.uuid4().hex[:12]
    table, control = f"t_scan_{suffix}", f"ctl_scan_{suffix}"
    info = conninfo(postgres.url)
    store = SQLAlchemyKeyValueStore(postgres.url, table_name=table)
    try:
        store.setup()
        with psycopg.connect(info, autocommit=True) as conn:
            collation = conn.execute(
                "SELECT datcollate FROM pg_database WHERE datname = current_database()"
            ).fetchone()
            assert collation is not None
            assert collation[0] not in ("C", "POSIX"), (
                f"the database's default collation is {collation[0]!r}: these plans only "
                "prove something on a database whose default collation is not C"
            )
            others = "ARRAY[" + ", ".join(f"'{p}'" for p in OTHER_PREFIXES) + "]"
            conn.execute(
                FILL.format(
                    table=table,
                    state_every=STATE_EVERY,
                    x_every=X_EVERY,
                    others=others,
                    n_others=len(OTHER_PREFIXES),
                    rows=ROWS,
                )
            )
            conn.execute(
                f"CREATE TABLE {control} "
                "(key text PRIMARY KEY, value text NOT NULL, expires_at timestamptz)"
            )
            conn.execute(f"INSERT INTO {control} SELECT key, value, expires_at FROM {table}")
            conn.execute(f"ANALYZE {table}")
            conn.execute(f"ANALYZE {control}")
            pkey = primary_key_name(conn, table)
            control_pkey = primary_key_name(conn, control)
        yield Loaded(info, store, table, pkey, control, control_pkey)
    finally:
        store.close()
        with psycopg.connect(info, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"DROP TABLE IF EXISTS {control}")


# --- plans -----------------------------------------------------------------


def plan_nodes(plan: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def render(plan: Mapping[str, Any], depth: int = 0) -> list[str]:
    """One line per node: its type, the index and the table, and the index condition."""
    label = plan["Node Type"]
    if "Index Name" in plan:
        label += f" using {plan['Index Name']}"
    if "Relation Name" in plan:
        label += f" on {plan['Relation Name']}"
    if "Index Cond" in plan:
        label += f"  [{plan['Index Cond']}]"
    if "Filter" in plan and plan["Node Type"] == "Seq Scan":
        label += f"  filter [{plan['Filter']}]"
    lines = ["    " + "  " * depth + label]
    for child in plan.get("Plans", []):
        lines += render(child, depth + 1)
    return lines


def show(title: str, plan: Mapping[str, Any]) -> None:
    print(f"\n  {title}:")
    print("\n".join(render(plan)))


def explain_json(conn: psycopg.Connection[Any], query: Any, params: Any = None) -> dict[str, Any]:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    document = json.loads(row[0]) if isinstance(row[0], str) else row[0]
    plan: dict[str, Any] = document[0]["Plan"]
    return plan


def explain_custom(info: str, store_sql: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The plan for these values, the way the store sends them (psycopg, server-side binding)."""
    with psycopg.connect(info, autocommit=True) as conn:
        return explain_json(conn, "EXPLAIN (FORMAT JSON) " + store_sql, params)


def numbered(store_sql: str, names: Sequence[str]) -> str:
    """The store's ``%(name)s`` SQL with ``$1, $2, ...`` placeholders, for PREPARE."""
    text = store_sql
    for n, name in enumerate(names, start=1):
        text = text.replace(f"%({name})s", f"${n}")
    assert "%(" not in text, text
    return text.replace("%%", "%")


def explain_generic(info: str, prepared_sql: str, values: Sequence[str]) -> dict[str, Any]:
    """The plan PostgreSQL uses for a prepared statement once it settles on a generic one."""
    types = sql.SQL(", ").join(sql.SQL("text") for _ in values)
    args = sql.SQL(", ").join(sql.Literal(v) for v in values)
    with psycopg.connect(info, autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(sql.SQL("PREPARE p({}) AS ").format(types) + sql.SQL(prepared_sql))
        plan = explain_json(conn, sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE p({})").format(args))
        conn.execute("DEALLOCATE p")
    return plan


def index_scans_on(plan: Mapping[str, Any], index: str) -> list[Mapping[str, Any]]:
    return [
        n
        for n in plan_nodes(plan)
        if n["Node Type"] in INDEX_SCANS and n.get("Index Name") == index
    ]


def seq_scans_on(plan: Mapping[str, Any], table: str) -> list[Mapping[str, Any]]:
    return [
        n
        for n in plan_nodes(plan)
        if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == table
    ]


def assert_uses_primary_key(plan: Mapping[str, Any], loaded: Loaded) -> list[Mapping[str, Any]]:
    drawn = "\n".join(render(plan))
    scans = index_scans_on(plan, loaded.pkey)
    assert scans, f"no index scan on {loaded.pkey}:\n{drawn}"
    assert not seq_scans_on(plan, loaded.table), f"a sequential scan of {loaded.table}:\n{drawn}"
    return scans


# --- the store's scans -------------------------------------------------------

SCANS = [
    pytest.param("workflow:state:*", "scan_range", id="prefix"),
    pytest.param("workflow:*:x", "scan_range_match", id="middle-wildcard"),
]


def store_scan(loaded: Loaded, pattern: str, op: str) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters the store sends for ``keys(pattern)``."""
    call = loaded.store._calls.keys(pattern)
    assert call.op == op, (pattern, call)
    assert loaded.store._statements is not None  # compiled by setup()
    statement = loaded.store._statements.op(op).statement
    assert isinstance(statement, ClauseElement)
    return str(statement.compile(loaded.store.engine)), call.params


@pytest.mark.parametrize(("pattern", "op"), SCANS)
def test_scan_uses_primary_key_with_a_custom_plan(loaded: Loaded, pattern: str, op: str) -> None:
    store_sql, params = store_scan(loaded, pattern, op)
    plan = explain_custom(loaded.conninfo, store_sql, params)
    show(f"keys({pattern!r}) -> {op}, custom plan for {params}", plan)
    scans = assert_uses_primary_key(plan, loaded)
    # Custom indeed: the planner saw the values.
    conditions = " ".join(str(s.get("Index Cond", "")) for s in scans)
    assert f"'{params['lower']}'" in conditions, conditions


@pytest.mark.parametrize(("pattern", "op"), SCANS)
def test_scan_uses_primary_key_with_a_generic_plan(loaded: Loaded, pattern: str, op: str) -> None:
    store_sql, params = store_scan(loaded, pattern, op)
    names = list(params)
    plan = explain_generic(loaded.conninfo, numbered(store_sql, names), [params[n] for n in names])
    show(f"keys({pattern!r}) -> {op}, generic plan (PREPARE, force_generic_plan)", plan)
    scans = assert_uses_primary_key(plan, loaded)
    # Generic indeed: the index condition holds the parameters, not the values.
    conditions = " ".join(str(s.get("Index Cond", "")) for s in scans)
    assert re.search(r"\$1\b", conditions) and re.search(r"\$2\b", conditions), conditions


def test_list_runs_the_prefix_range_scan(loaded: Loaded) -> None:
    """``list()`` goes through ``keys_with_prefix``: the same statement as ``keys("p*")``."""
    call = loaded.store._calls.keys_with_prefix(DEFAULT_PREFIX)
    assert call.op == "scan_range"
    assert call.params == loaded.store._calls.keys(DEFAULT_PREFIX + "*").params


def test_control_default_collation_key_scans_the_whole_table(loaded: Loaded) -> None:
    """The same rows in a table whose key has the database's collation: no index helps."""
    like = f"SELECT key FROM {loaded.control} WHERE key LIKE $1"
    generic = explain_generic(loaded.conninfo, like, ["workflow:state:%"])
    show(f"control: {like}, generic plan", generic)
    assert seq_scans_on(generic, loaded.control), "\n".join(render(generic))
    assert not index_scans_on(generic, loaded.control_pkey)

    # For information: with the value, C.UTF-8 still cannot serve LIKE 'p%' from the index.
    with psycopg.connect(loaded.conninfo, autocommit=True) as conn:
        custom = explain_json(
            conn,
            f"EXPLAIN (FORMAT JSON) SELECT key FROM {loaded.control} WHERE key LIKE %s",
            ["workflow:state:%"],
        )
    show(f"control: {like}, custom plan for 'workflow:state:%'", custom)

    # The store's own range statement needs the key column itself to be "C".
    store_sql, params = store_scan(loaded, "workflow:state:*", "scan_range")
    on_control = re.sub(rf"\b{loaded.table}\b", loaded.control, store_sql)
    names = list(params)
    ranged = explain_generic(
        loaded.conninfo, numbered(on_control, names), [params[n] for n in names]
    )
    show("control: the store's scan_range on the control table, generic plan", ranged)
    assert seq_scans_on(ranged, loaded.control), "\n".join(render(ranged))
    assert not index_scans_on(ranged, loaded.control_pkey)


def test_public_api_finds_every_key(loaded: Loaded) -> None:
    keys = loaded.store.keys("workflow:state:*")
    assert len(keys) == STATE_KEYS
    assert keys == sorted(keys)
    assert all(k.startswith(DEFAULT_PREFIX) for k in keys)

    run_ids = create_state_persistence(loaded.store).list()
    assert len(run_ids) == STATE_KEYS
    assert [DEFAULT_PREFIX + r for r in run_ids] == keys

    x_keys = loaded.store.keys("workflow:*:x")
    assert len(x_keys) == X_KEYS
    assert all(k.startswith(DEFAULT_PREFIX) and k.endswith(":x") for k in x_keys)

    # Often enough that psycopg prepares the statement server-side: same answers.
    for _ in range(8):
        assert loaded.store.keys("workflow:state:*") == keys
