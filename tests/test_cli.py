"""The command line, run as a user runs it (a subprocess), on SQLite and PostgreSQL.

What a command claims is checked in the database, not only in its output.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import AWAITLY_FIXTURES
from fake_clock import FakeClock
from sqlalchemy import create_engine, inspect, text

from sqlalchemy_awaitly import SQLAlchemyKeyValueStore, durable
from sqlalchemy_awaitly.durable import Err
from sqlalchemy_awaitly.wire.documents import lease_value

pytestmark = pytest.mark.slow  # end to end, in processes of its own: pytest -m slow

SCRIPT = Path(sys.executable).parent / "sqlalchemy-awaitly"
STATE_OF = "SELECT value FROM awaitly_workflow_state WHERE key = :key"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "sqlalchemy_awaitly", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def cli_json(*args: str) -> Any:
    """What a ``--json`` command printed; its stderr in the failure if it failed."""
    done = cli(*args)
    assert done.returncode == 0, (done.returncode, done.stderr)
    return json.loads(done.stdout)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it yet (PostgreSQL: a fresh database)."""
    if request.param == "sqlite":
        sqlite3.connect(tmp_path / "cli.db").close()  # an empty database file
        yield f"sqlite:///{tmp_path / 'cli.db'}"
        return
    from databases import empty_postgres_database

    with empty_postgres_database(request.getfixturevalue("postgres").url) as fresh:
        yield fresh


def rows(url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())
    finally:
        engine.dispose()


def test_demo_tells_the_story_and_the_database_agrees(url: str) -> None:
    done = cli("demo", "--url", url, "--workflow-id", "checkout-test", "--keep")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "The story held" in done.stdout
    assert "checkout-test: resumed, completed" in done.stdout  # by the recovery worker
    assert "stopping (SIGTERM)" in done.stdout  # which the demo then stops
    found = rows(
        url, "SELECT step, pid FROM awaitly_demo_effects WHERE workflow_id = 'checkout-test'"
    )
    steps = [step for step, _ in found]
    assert sorted(steps) == sorted(
        ["fetch-user", "reserve-stock", "charge-card", "create-order", "send-confirmation"]
    )  # every step's side effect exactly once
    pids = {step: pid for step, pid in found}
    crashed, resumed = pids["fetch-user"], pids["send-confirmation"]
    assert crashed != resumed
    assert pids["charge-card"] == crashed and pids["create-order"] == resumed
    assert rows(url, "SELECT key FROM awaitly_workflow_state") == []  # finished: state gone


def test_demo_fails_when_a_checkpointed_step_ran_again(url: str) -> None:
    # The demo counts side effects in the database; one extra for a step that
    # will be checkpointed before the crash must make it fail.
    assert cli("migrate", "--url", url).returncode == 0
    from sqlalchemy_awaitly.cli.demo import effects

    engine = create_engine(url)
    with engine.begin() as conn:
        effects.create(conn)
        conn.execute(
            effects.insert().values(workflow_id="checkout-doubled", step="fetch-user", pid=1)
        )
    engine.dispose()
    done = cli("demo", "--url", url, "--workflow-id", "checkout-doubled")
    assert done.returncode == 1
    assert "did not hold" in done.stderr and "fetch-user" in done.stderr


def failed_run(url: str, workflow_id: str) -> None:
    """A run that fails at its second step; by its clock the first took 12 ms, the
    second 1.5 s."""
    store = SQLAlchemyKeyValueStore(url)
    clock = FakeClock()
    try:

        def checkout(step: Any, deps: Any) -> Any:
            step(lambda: clock.sleep(0.012) or {"id": "123"}, key="fetch-user")
            step(lambda: clock.sleep(1.5) or Err("OUT_OF_STOCK"), key="create-order")

        durable.run(None, checkout, id=workflow_id, store=store, clock=clock)
    finally:
        store.close()


def test_operator_commands(url: str) -> None:
    assert cli("list", "--url", url).returncode == 4  # no table yet
    migrated = cli("migrate", "--url", url)
    assert migrated.returncode == 0, migrated.stderr
    assert cli("migrate", "--url", url).returncode == 0  # again: nothing to do
    failed_run(url, "order-1")
    time.sleep(0.01)
    failed_run(url, "order-2")
    failed_run(url, "invoice-1")

    listed = cli("list", "--url", url)
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "STEPS", "LAST", "UPDATE", "DETAIL"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["invoice-1", "failed", "2"],
        ["order-2", "failed", "2"],
        ["order-1", "failed", "2"],
    ]
    assert lines[1].endswith("step create-order failed")
    as_json = cli_json("list", "order-", "--url", url, "--json")
    assert [(run["id"], run["state"]) for run in as_json] == [
        ("order-2", "failed"),
        ("order-1", "failed"),
    ]
    assert as_json[0]["steps"] == 2 and as_json[0]["failed_step"] == "create-order"
    assert len(cli_json("list", "--url", url, "--json", "--limit", "1")) == 1

    shown = cli("show", "order-1", "--url", url, "--raw")
    assert shown.returncode == 0
    stored = rows(
        url, "SELECT value FROM awaitly_workflow_state WHERE key = :k", k="workflow:state:order-1"
    )
    assert json.loads(shown.stdout) == json.loads(stored[0][0])
    assert cli("show", "missing", "--url", url).returncode == 1

    retried = cli("retry", "order-1", "--url", url)
    assert retried.returncode == 0, retried.stderr
    value = rows(
        url, "SELECT value FROM awaitly_workflow_state WHERE key = :k", k="workflow:state:order-1"
    )
    assert list(json.loads(value[0][0])["steps"]) == ["fetch-user"]
    assert cli("retry", "order-1", "--url", url).returncode == 1  # nothing left to retry
    assert cli("retry", "missing", "--url", url).returncode == 1

    deleted = cli("delete", "order-1", "order-2", "--url", url)
    assert deleted.returncode == 0
    assert cli("delete", "order-1", "--url", url).returncode == 1
    keys = [k for (k,) in rows(url, "SELECT key FROM awaitly_workflow_state")]
    assert keys == ["workflow:state:invoice-1"]

    store = SQLAlchemyKeyValueStore(url, create_table=False)
    store.set_many({f"session:{i}": "x" for i in range(25)}, ttl=0.5)
    store.close()
    time.sleep(1.2)
    stats = cli("stats", "--url", url)
    assert stats.returncode == 0 and "expired rows  25" in stats.stdout
    purged = cli("purge-expired", "--url", url, "--batch-size", "10")
    assert purged.returncode == 0 and "purged 25 expired rows" in purged.stdout
    assert rows(url, "SELECT count(*) FROM awaitly_workflow_state")[0][0] == 1


def test_a_cancelled_run_is_listed_and_uncancelled(url: str) -> None:
    assert cli("migrate", "--url", url).returncode == 0
    store = SQLAlchemyKeyValueStore(url)
    token = durable.CancelToken()
    try:

        def export(step: Any, deps: Any) -> Any:
            step(lambda: token.cancel("closed"), key="first-page")
            step(lambda: 2, key="rest")

        durable.run(None, export, id="export-1", store=store, cancel=token)
    finally:
        store.close()
    listed = cli_json("list", "--url", url, "--json")
    assert [(run["id"], run["state"]) for run in listed] == [("export-1", "cancelled")]
    assert cli("cancel", "export-1", "--url", url, "--reason", "again").returncode == 0
    assert cli("cancel", "missing", "--url", url).returncode == 1
    uncancelled = cli("uncancel", "export-1", "--url", url)
    assert uncancelled.returncode == 0, uncancelled.stderr
    assert "the next run resumes it" in uncancelled.stdout
    assert cli_json("list", "--url", url, "--json")[0]["state"] == "crashed"
    assert cli("uncancel", "export-1", "--url", url).returncode == 1  # not cancelled now
    assert cli("uncancel", "missing", "--url", url).returncode == 1


def test_bad_urls_and_unreachable_servers(tmp_path: Path) -> None:
    assert cli("list").returncode == 2  # no URL at all
    assert cli("list", "--url", "not a url").returncode == 2
    assert cli("list", "--url", "mysql://u@h/db").returncode == 2
    missing = cli("list", "--url", f"sqlite:///{tmp_path / 'missing.db'}")
    assert missing.returncode == 2 and "no SQLite database" in missing.stderr
    assert not (tmp_path / "missing.db").exists()  # and none was created
    down = cli("list", "--url", "postgresql://nobody@127.0.0.1:9/none")
    assert down.returncode == 3 and "could not be reached" in down.stderr
    assert cli("list", env={"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}).returncode == 2


def test_console_script_and_help() -> None:
    done = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Exit codes" in done.stdout


def test_importing_the_library_does_not_load_the_cli() -> None:
    probe = (
        "import sys, sqlalchemy_awaitly, sqlalchemy_awaitly.durable; print('click' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "False"


SECRET = "Xyzzy-s3cret-42"
COMMANDS = [
    ["list"],
    ["list", "--json"],
    ["show", "order-1"],
    ["delete", "order-1"],
    ["retry", "order-1"],
    ["cancel", "order-1"],
    ["uncancel", "order-1"],
    ["purge-expired"],
    ["stats"],
    ["migrate"],
]


def with_secret(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(password=SECRET).render_as_string(hide_password=False)


def assert_no_secret(done: subprocess.CompletedProcess[str], *args: str) -> None:
    assert SECRET not in done.stdout + done.stderr, (args, done.returncode, done.stderr)


def run_everywhere(url: str, *, stateless: bool) -> list[int]:
    """Every operator command, with the URL from --url and from DATABASE_URL.

    ``stateless`` (nothing can change in between): both ways exit alike, and
    the commands run side by side.
    """
    runs = [
        (command, how)
        for command in COMMANDS
        for how in (["--url", url], [])  # [] : the URL from DATABASE_URL
    ]

    def run(command: list[str], how: list[str]) -> subprocess.CompletedProcess[str]:
        done = cli(*command, *how, env=None if how else {"DATABASE_URL": url})
        assert_no_secret(done, *command, *how)
        return done

    with ThreadPoolExecutor(max_workers=4 if stateless else 1) as pool:
        results = list(pool.map(lambda r: run(*r), runs))
    codes = [done.returncode for done in results]
    if stateless:
        assert codes[0::2] == codes[1::2]
    return codes


@pytest.mark.slow
def test_the_password_is_never_printed_when_a_command_fails(tmp_path: Path) -> None:
    down = with_secret("postgresql://app@127.0.0.1:9/app")
    assert set(run_everywhere(down, stateless=True)) == {3}  # cannot reach the database
    unparsable = f"postgresql://app:{SECRET}@127.0.0.1:notaport/app"
    assert set(run_everywhere(unparsable, stateless=True)) == {2}
    assert_no_secret(cli("demo", "--url", down), "demo")


@pytest.mark.slow
@pytest.mark.postgres
def test_the_password_is_never_printed_by_any_command(postgres: Any) -> None:
    from databases import empty_postgres_database

    with empty_postgres_database(postgres.url) as fresh:
        url = with_secret(fresh)
        missing_table = cli("list", "--url", url)
        assert missing_table.returncode == 4
        assert "migrate --url" in missing_table.stderr and "***" in missing_table.stderr
        assert_no_secret(missing_table, "list")
        assert 0 in run_everywhere(
            url, stateless=False
        )  # migrate succeeds; the others run on its table
        failed_run(url, "order-1")
        assert set(run_everywhere(url, stateless=False)) <= {0, 1}
        demo = cli("demo", "--url", url)
        assert demo.returncode == 0, demo.stderr
        assert "database: " in demo.stdout and "***" in demo.stdout
        assert_no_secret(demo, "demo")


def test_arguments_that_are_not_utf8_are_bad_input(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    assert cli("migrate", "--url", url).returncode == 0
    not_utf8 = os.fsdecode(b"order-\xff")  # as Python decodes such a command-line byte
    for args in (["show", not_utf8], ["delete", not_utf8], ["list", not_utf8]):
        done = cli(*args, "--url", url)
        assert done.returncode == 2, (args, done.stderr)
        assert "lone surrogate" in done.stderr and "Traceback" not in done.stderr


def test_the_missing_table_hint_is_a_command_that_works(url: str) -> None:
    schema = None
    if url.startswith("postgresql"):
        schema = "ops"
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("CREATE SCHEMA ops"))
        engine.dispose()
    where = ["--table", "run_state", *(["--schema", schema] if schema else [])]
    missing = cli("list", "--url", url, *where)
    assert missing.returncode == 4
    assert "create_table" not in missing.stderr and "verify_schema" not in missing.stderr
    hint = missing.stderr.strip().splitlines()[-1].strip()
    assert hint.startswith("sqlalchemy-awaitly migrate --url ") and hint.endswith(" ".join(where))
    words = hint.replace(f"'{url}'", url).split()[1:]
    for _ in range(2):  # again: nothing to do
        migrated = cli(*words)
        assert migrated.returncode == 0, migrated.stderr
    assert cli("list", "--url", url, *where).returncode == 0
    failed_run_in(url, "run_state", schema)
    as_json = cli_json("list", "--url", url, *where, "--json")
    assert [(run["id"], run["state"]) for run in as_json] == [("order-9", "failed")]
    assert cli("list", "--url", url).returncode == 4  # the default table was not made


def failed_run_in(url: str, table: str, schema: str | None) -> None:
    store = SQLAlchemyKeyValueStore(url, table_name=table, schema=schema, create_table=False)
    try:
        durable.run(None, lambda step, deps: step(lambda: Err("NO"), key="pay"), id="order-9",
                    store=store)  # fmt: skip
    finally:
        store.close()


def test_version() -> None:
    shown = cli("--version")
    assert shown.returncode == 0 and shown.stdout.startswith("sqlalchemy-awaitly, version ")


def tables_in(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_the_demo_removes_what_it_made(url: str) -> None:
    before = tables_in(url)
    assert cli("demo", "--url", url).returncode == 0
    assert tables_in(url) == before  # its effects table and the state table are gone
    assert cli("migrate", "--url", url).returncode == 0
    assert cli("demo", "--url", url).returncode == 0
    assert "awaitly_workflow_state" in tables_in(url)  # it was there before: left
    assert rows(url, "SELECT key FROM awaitly_workflow_state") == []


def test_the_demo_without_a_url_uses_a_folder_of_its_own(tmp_path: Path) -> None:
    done = cli("demo", env={"TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []  # removed at the end


def test_ctrl_c_ends_the_demo_once_with_130(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environment["TMPDIR"] = str(tmp_path)
    demo = subprocess.Popen(
        [sys.executable, "-m", "sqlalchemy_awaitly", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 60
        while "ran in pid" not in demo.stdout.readline():  # a worker is running a step
            assert time.monotonic() < deadline and demo.poll() is None
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground group
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 130
    assert err.count("interrupted") == 1 and "Aborted" not in err + out
    assert "Traceback" not in err + out
    assert list(tmp_path.iterdir()) == []


def test_show_is_a_timeline_of_rows_either_runtime_wrote(url: str) -> None:
    assert cli("migrate", "--url", url).returncode == 0
    store = SQLAlchemyKeyValueStore(url)
    try:
        failed_run(url, "order-1")
        for name in ("thrown_error_with_cause", "failed_result_object"):
            captured = json.loads((AWAITLY_FIXTURES / f"{name}.json").read_text())
            save = [c for c in captured["store_calls"] if c["op"] == "save"][-1]
            store.set(f"workflow:state:{save['id']}", json.dumps(save["snapshot"]))
        store.set("workflow:lock:order-1", lease_value("0123456789abcdef", "web-1 pid 42"), 60)
        store.set("workflow:lock:wf-errobj", lease_value("fedcba9876543210"), 60)  # Node's
    finally:
        store.close()

    shown = cli("show", "order-1", "--url", url)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "order-1  running" and "  held by      web-1 pid 42" in lines
    assert lines[-2:] == [
        "    1  fetch-user    ok      12 ms",
        "    2  create-order  failed  1.5 s  OUT_OF_STOCK",
    ]
    thrown = cli("show", "wf-thrown", "--url", url).stdout.splitlines()
    assert thrown[0] == "wf-thrown  failed" and thrown[-1].startswith(
        "    1  call-api  failed  UnexpectedError: Error: outer failure"
    )
    assert "Traceback" not in thrown[-1] and "    at " not in "\n".join(thrown)
    errobj = cli("show", "wf-errobj", "--url", url).stdout.splitlines()
    assert "  held by      token fedcba98" in errobj
    assert errobj[-1].split()[:4] == ["1", "charge", "failed", "PAYMENT_FAILED:"]

    listed = cli("list", "--url", url).stdout.splitlines()
    holders = {line.split()[0]: line for line in listed[1:]}
    assert holders["order-1"].endswith("held by web-1 pid 42")
    assert holders["wf-errobj"].endswith("held by token fedcba98")
    as_json = {run["id"]: run for run in cli_json("list", "--url", url, "--json")}
    assert as_json["order-1"]["holder"] == "web-1 pid 42"
    assert as_json["wf-thrown"]["holder"] is None


def test_show_prints_what_other_writers_left_as_utf8() -> None:
    """Lone surrogates (a row another writer left) anywhere ``show`` prints them are
    escaped, never a UnicodeEncodeError (found by the bad-rows fuzz test)."""
    from sqlalchemy_awaitly.cli.timeline import timeline

    odd = "x\udcff"
    snapshot = {
        "steps": {"a": {"ok": False, "error": {"type": odd}}, "b": {"ok": False, "error": odd}},
        "execution": {"lastUpdated": odd},
        "metadata": {"sqlalchemyAwaitly": {"workflow": {"type": odd, "version": odd}}},
    }
    for line in timeline(odd, snapshot, None):
        line.encode("utf-8")


def test_show_prints_fields_other_writers_nested_by_their_kind() -> None:
    """A field that should be text but holds JSON nested deeper than ``str`` can
    recurse (rows read up to 20,000 levels) prints as its kind, never a
    RecursionError (found by the bad-rows fuzz test)."""
    from sqlalchemy_awaitly.cli.timeline import timeline

    deep: list[object] = ["x"]
    for _ in range(5000):
        deep = [deep]
    snapshot = {
        "steps": {},
        "execution": {"lastUpdated": deep},
        "metadata": {"sqlalchemyAwaitly": {"workflow": {"type": {"a": deep}, "version": 10**40}}},
    }
    lines = timeline("w", snapshot, None)
    assert "  workflow     (object) v(number)" in lines
    assert "  last update  (list)" in lines
