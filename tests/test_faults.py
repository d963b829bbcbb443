"""The fault policy, the per-operation table in code and docs, and the prepare setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import make_url

from sqlalchemy_awaitly import (
    ConfigurationError,
    OutcomeUnknownError,
    PoolExhaustedError,
    SQLAlchemyKeyValueStore,
    StatementTimeoutError,
    StoreBusyError,
    StoreUnavailableError,
    TransactionConflictError,
    workflow_state_table,
)
from sqlalchemy_awaitly.cli.errors import BUSY, UNREACHABLE, Failure, explained
from sqlalchemy_awaitly.config import prepare_threshold_of
from sqlalchemy_awaitly.faults import Fault, classify, judge
from sqlalchemy_awaitly.statements import Statements

ERRORS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "errors.md"

# The docs' names for the store's methods, and the statements they run.
DOCUMENTED_NAMES = {
    "get": {"get"},
    "exists": {"exists"},
    "keys": {"scan_exact", "scan_range", "scan_from", "scan_range_match", "scan_from_match"},
    "keys_with_prefix": set(),  # the same scans as keys
    "get_many": {"get_many"},
    "stats": {"count", "sizes"},
    "set": {"set"},
    "set_many": {"set_many"},
    "touch": {"touch"},
    "touch(if_value=)": {"touch_if"},
    "set_guarded": {"set_guarded"},
    "add": {"add"},
    "add_and_get": {"add_and_get"},
    "delete": {"delete"},
    "delete(if_value=)": {"delete_if"},
    "delete_many": {"delete_many"},
    "delete_guarded": {"delete_guarded"},
    "delete_guarded(release=True)": {"delete_guarded_release"},
    "purge_expired": {"purge_batch"},
}


def _documented_table() -> dict[str, bool]:
    """Method name -> repeated (True) or OutcomeUnknownError (False), from docs/errors.md."""
    text = ERRORS_PAGE.read_text()
    table = text.split("| operation | the connection breaks after it was sent |")[1]
    rows = table.split("\n\n")[0].splitlines()[2:]
    found: dict[str, bool] = {}
    for row in rows:
        names_cell, effect = row.strip("|").split("|", 1)
        for name in re.findall(r"`([^`]+)`", names_cell):
            found[name] = "OutcomeUnknownError" not in effect
    return found


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_the_documented_table_is_the_code_table(dialect: str) -> None:
    documented = _documented_table()
    assert set(documented) == set(DOCUMENTED_NAMES)
    statements = Statements(workflow_state_table(MetaData()), dialect)
    covered = set().union(*DOCUMENTED_NAMES.values())
    assert covered == {op.name for op in statements.all_ops()}
    for name, ops in DOCUMENTED_NAMES.items():
        for op in ops:
            assert statements.op(op).repeatable is documented[name], (name, op)
            for first in statements.op(op).before:  # run in turn on some drivers: judged alike
                assert first.repeatable is documented[name], (name, op, first.name)


class Lost(Exception):
    """A driver error without a SQLSTATE."""


class WithState(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def test_a_lost_reply_is_repeated_only_where_the_answer_stays_true() -> None:
    lost = classify(Lost("server closed the connection unexpectedly"), disconnected=True)
    assert lost is Fault.LOST
    assert judge("get", True, lost, Lost(), "t", may_repeat=True) is None
    assert isinstance(
        judge("get", True, lost, Lost(), "t", may_repeat=False), StoreUnavailableError
    )
    unknown = judge("add", False, lost, Lost(), "t", may_repeat=True)
    assert isinstance(unknown, OutcomeUnknownError)


def test_what_the_server_says_it_did_not_run_is_repeated() -> None:
    for code in ("57P01", "57P03", "57P05"):
        fault = classify(WithState(code), disconnected=True)
        assert fault is Fault.NOT_RUN
        assert judge("add", False, fault, WithState(code), "t", may_repeat=True) is None
        last = judge("add", False, fault, WithState(code), "t", may_repeat=False)
        assert type(last) is StoreUnavailableError


def test_busy_database_errors() -> None:
    timeout = classify(WithState("57014"), disconnected=False)
    assert isinstance(
        judge("set", True, timeout, Exception(), "t", may_repeat=True), StatementTimeoutError
    )
    conflict = classify(WithState("40P01"), disconnected=False)
    assert (
        judge("set", True, conflict, Exception(), "t", may_repeat=True) is None
    )  # rolled back whole
    in_caller_tx = judge("set", True, conflict, Exception(), "t", may_repeat=False)
    assert isinstance(in_caller_tx, TransactionConflictError)
    bouncer = classify(Exception("query_wait_timeout"), disconnected=True)
    assert isinstance(
        judge("add", False, bouncer, Exception(), "t", may_repeat=True), PoolExhaustedError
    )
    refused = WithState("23505")
    assert judge("add", False, classify(refused, False), refused, "t", may_repeat=True) is refused


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (StatementTimeoutError("x"), BUSY),
        (PoolExhaustedError("x"), BUSY),
        (OutcomeUnknownError("x"), UNREACHABLE),
    ],
)
def test_cli_exit_codes(error: Exception, code: int) -> None:
    with pytest.raises(Failure) as caught, explained(None):
        raise error
    assert caught.value.exit_code == code
    assert isinstance(error, StoreBusyError) == (code == BUSY)


@pytest.mark.parametrize(
    ("given", "threshold"),
    [
        ("5", 5),
        ("0", 0),
        (" 12 ", 12),
        ("none", None),
        ("OFF", None),
        ("never", None),
        (3, 3),
        (None, None),
    ],
)
def test_prepare_threshold_spellings(given: object, threshold: int | None) -> None:
    assert prepare_threshold_of(given, "x") == threshold


@pytest.mark.parametrize("given", ["", "-1", "five", "1.5", -1, 1.5, True])
def test_bad_prepare_thresholds(given: object) -> None:
    with pytest.raises(ConfigurationError, match="whole number"):
        prepare_threshold_of(given, "prepare_threshold")


@pytest.mark.postgres
def test_the_urls_prepare_threshold_reaches_psycopg(postgres: object, table_name: str) -> None:
    url = make_url(postgres.url)  # type: ignore[attr-defined]
    for query, expected in (
        ({}, None),
        ({"prepare_threshold": "3"}, 3),
        ({"prepare_threshold": "off"}, None),
    ):
        with SQLAlchemyKeyValueStore(url.update_query_dict(query), table_name=table_name) as store:
            assert "prepare_threshold" not in store.engine.url.query
            fairy = store.engine.raw_connection()
            try:
                assert fairy.driver_connection.prepare_threshold == expected  # type: ignore[union-attr]
            finally:
                fairy.close()
    with SQLAlchemyKeyValueStore(url, table_name=table_name, prepare_threshold=2) as store:
        fairy = store.engine.raw_connection()
        assert fairy.driver_connection.prepare_threshold == 2  # type: ignore[union-attr]
        fairy.close()
        store.engine.dispose()
    create_engine(url).dispose()


def test_prepare_threshold_conflicts_are_refused() -> None:
    url = "postgresql://u@localhost/db?prepare_threshold=5"
    with pytest.raises(ConfigurationError, match="both"):
        SQLAlchemyKeyValueStore(url, prepare_threshold=None)
    with pytest.raises(ConfigurationError, match="psycopg 3"):
        SQLAlchemyKeyValueStore("postgresql+psycopg2://u@localhost/db", prepare_threshold=5)
    with pytest.raises(ConfigurationError, match="connect_args"):
        SQLAlchemyKeyValueStore(engine=create_engine("sqlite://"), prepare_threshold=5)
