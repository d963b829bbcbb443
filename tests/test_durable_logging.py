"""What runs tell the standard log: starts, resumes, retries, failures and stops, under
``sqlalchemy_awaitly.durable``, naming errors by their type and never logging values."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from durable_harness import Env, With
from fake_clock import FakeClock

from sqlalchemy_awaitly.durable import Err, Ok, Retry, StopToken
from sqlalchemy_awaitly.durable.logs import error_type
from sqlalchemy_awaitly.durable.results import LeaseExpired

SECRET = "card 4111-1111-1111-1111"


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sqlalchemy_awaitly.durable"]


def test_a_failed_run_with_a_retry_then_its_resume(
    durable_env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sqlalchemy_awaitly")
    declined = {"on": True}

    def charge() -> Any:
        return Err("CARD_DECLINED", cause=SECRET) if declined["on"] else {"paid": SECRET}

    def body(deps: Any) -> Any:
        user = yield "fetch-user", lambda: {"name": SECRET}
        yield With("charge", charge, retry=Retry(2, initial_delay=0.5, jitter=False))
        return user

    failed = durable_env.run(body, id="order-1", clock=FakeClock())
    assert isinstance(failed, Err) and failed.error == "CARD_DECLINED"
    assert lines(caplog) == [
        "run 'order-1' started",
        "run 'order-1' step 'charge' failed (CARD_DECLINED); attempt 2 of 2 in 0.5 s",
        "run 'order-1' failed at step 'charge': CARD_DECLINED",
    ]
    caplog.clear()
    durable_env.helper("retry_step", "order-1")
    declined["on"] = False
    assert durable_env.run(body, id="order-1", clock=FakeClock()) == Ok({"name": SECRET})
    assert lines(caplog) == [
        "run 'order-1' resumed with 1 stored step(s)",
        "run 'order-1' completed",
    ]
    assert SECRET not in caplog.text  # no values, ever


def test_a_stopped_run_is_logged_as_resumable(
    durable_env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sqlalchemy_awaitly")
    token = StopToken()

    def body(deps: Any) -> Any:
        yield "a", lambda: token.stop()
        yield "b", lambda: 2

    durable_env.run(body, id="stopped", stop=token)
    assert lines(caplog)[-1] == "run 'stopped' stopped after step 'a': resumable"


def test_nothing_is_logged_below_warning_by_default(
    durable_env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sqlalchemy_awaitly")

    def body(deps: Any) -> Any:
        yield "a", lambda: 1

    assert durable_env.run(body, id="quiet") == Ok(None)
    assert lines(caplog) == []


@pytest.mark.parametrize(
    ("error", "named"),
    [
        ("OUT_OF_STOCK", "OUT_OF_STOCK"),
        ("user bob@example.com not found", "str"),  # a message, not a code
        ({"type": "PAYMENT_FAILED", "card": SECRET}, "PAYMENT_FAILED"),
        ({"card": SECRET}, "dict"),
        (ValueError(SECRET), "ValueError"),
        (LeaseExpired("wf"), "LEASE_EXPIRED"),
    ],
)
def test_errors_are_named_by_their_type(error: object, named: str) -> None:
    assert error_type(error) == named
