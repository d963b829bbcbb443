"""What runs and steps tell OpenTelemetry, when the app has set up an SDK.

A span per run, current while the run goes on, so its steps and store calls (and
what a step itself records) nest under it; a span per step, run or replayed, with
its attempts, retries and timeouts; counters and durations by outcome. A resumed
run's span links to the span of the run that wrote the row: the row carries that
span's ``traceparent`` in this runner's metadata, only while spans are recorded.

Attributes name workflows, steps and errors by id, key and type, never by value.
Metrics carry no ids (unbounded): the workflow's type, outcomes and error types.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..telemetry import gate
from .logs import error_type
from .results import Err, LeaseExpired, Result, RunnerError, WorkflowCancelled, WorkflowStopped

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.trace import Span, Tracer

    from .state import RunOptions, RunState

Attributes = dict[str, Any]


def outcome_of(result: Result[Any, Any]) -> tuple[str, str | None]:
    """A run's outcome for spans and metrics, and its error type if it did not complete."""
    if not isinstance(result, Err):
        return "completed", None
    error = result.error
    kind = error_type(error)
    if isinstance(error, WorkflowCancelled):
        return "cancelled", kind
    if isinstance(error, WorkflowStopped):
        return "stopped", kind
    if isinstance(error, LeaseExpired):
        return "lease_lost", kind
    if isinstance(error, RunnerError):
        return "runner_error", kind
    return "failed", kind


def _traceparent(span: Span) -> str | None:
    context = span.get_span_context()
    if not context.is_valid or not span.is_recording():
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _linked(traceparent: object) -> Any:
    """The span context a stored ``traceparent`` names, or None if it names none."""
    if not isinstance(traceparent, str):
        return None
    parts = traceparent.split("-")
    if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    t = gate.trace_api
    context = t.SpanContext(trace_id, span_id, is_remote=True, trace_flags=t.TraceFlags(flags))
    return context if context.is_valid else None


class StepTrace:
    """One step being recorded: its span, current while it runs, and its attempts."""

    __slots__ = ("attempt", "metric", "run", "span", "started", "token")

    def __init__(self, run: RunTrace, key: str, name: str) -> None:
        self.run = run
        self.attempt = 1
        self.metric: Attributes = dict(run.metric)
        self.span: Span | None = None
        self.token: Token[Any] | None = None
        if run.tracer is not None:
            attributes = {**run.ids, "awaitly.step.key": key, "awaitly.step.name": name}
            self.span = run.tracer.start_span(f"step {name}", attributes=attributes)
            self.token = gate.context_api.attach(gate.trace_api.set_span_in_context(self.span))
        self.started = time.perf_counter()

    def ended(self, result: Result[Any, Any] | None, raised: BaseException | None) -> None:
        """``result``: the step's recorded outcome; None: it ended the run otherwise
        (``raised``: a lost lease, a failed save, a usage error)."""
        seconds = time.perf_counter() - self.started
        outcome = "ok" if result is not None and not isinstance(result, Err) else "error"
        kind = None
        if isinstance(result, Err):
            kind = error_type(result.error)
        elif raised is not None:
            kind = _raised_type(raised)
        if self.span is not None:
            span = self.span
            span.set_attribute("awaitly.step.replayed", False)
            span.set_attribute("awaitly.step.attempt", self.attempt)
            thrown = result.cause if isinstance(result, Err) else raised
            if isinstance(thrown, Exception):
                # What the step raised, by class only (its message may hold values).
                span.add_event("exception", {"exception.type": gate.exception_type(thrown)})
            _ended_span(span, outcome, kind, self.token)
        instruments = self.run.instruments
        if instruments is not None:
            attributes = {**self.metric, "awaitly.outcome": outcome}
            if kind is not None:
                attributes["error.type"] = kind
            instruments.step_duration.record(seconds, attributes)
            instruments.steps.add(1, {**attributes, "awaitly.step.replayed": False})

    def event(self, name: str, attributes: Attributes) -> None:
        if self.span is not None:
            self.span.add_event(name, attributes)


def _raised_type(raised: BaseException) -> str:
    """What ended a step that has no outcome: the run's end (a ``StepExit``) by its
    error's type, anything else by its class."""
    result = getattr(raised, "result", None)
    if isinstance(result, Err):
        return error_type(result.error)
    return type(raised).__name__


def _ended_span(span: Span, outcome: str, kind: str | None, token: Token[Any] | None) -> None:
    span.set_attribute("awaitly.outcome", outcome)
    if kind is not None:
        span.set_attribute("error.type", kind)
        if outcome not in ("stopped", "cancelled"):
            span.set_status(gate.trace_api.Status(gate.trace_api.StatusCode.ERROR, kind))
    if token is not None:
        gate.context_api.detach(token)
    span.end()


class RunTrace:
    """One run being recorded: its span (current while its plan runs) and its metrics."""

    def __init__(self, o: RunOptions, tracer: Tracer | None, instruments: Any) -> None:
        self.tracer = tracer
        self.instruments: gate.Instruments | None = instruments
        self.ids: Attributes = {"awaitly.workflow.id": o.workflow_id}
        registered = o.registered or {}
        kind = registered.get("type")
        self.metric: Attributes = {"awaitly.workflow.type": kind} if isinstance(kind, str) else {}
        self.resumed = False
        self.span: Span | None = None
        self.token: Token[Any] | None = None
        self.steps: dict[str, StepTrace] = {}
        if tracer is not None:
            attributes = {**self.ids, **self.metric, "awaitly.workflow.version": o.version}
            self.span = tracer.start_span(f"run {kind or o.workflow_name}", attributes=attributes)
            self.token = gate.context_api.attach(gate.trace_api.set_span_in_context(self.span))
        self.started = time.perf_counter()

    @property
    def traceparent(self) -> str | None:
        """The run span's W3C ``traceparent``, for the row (None: not recorded)."""
        return None if self.span is None else _traceparent(self.span)

    def began(self, stored_steps: int | None, previous: object) -> None:
        """The run read its row: ``stored_steps`` None if there was none; ``previous``:
        the ``traceparent`` the row carries."""
        self.resumed = stored_steps is not None
        if self.span is None:
            return
        self.span.set_attribute("awaitly.run.resumed", self.resumed)
        if stored_steps is not None:
            self.span.set_attribute("awaitly.run.stored_steps", stored_steps)
        link = _linked(previous)
        if link is not None:
            self.span.add_link(link, {"awaitly.link": "resumed"})

    def ended(self, result: Result[Any, Any] | None, raised: BaseException | None) -> None:
        seconds = time.perf_counter() - self.started
        if result is not None:
            outcome, kind = outcome_of(result)
        else:
            outcome, kind = "raised", type(raised).__name__
        for step in list(self.steps.values()):  # a step cut short by an exception
            step.ended(None, raised)
        if self.span is not None:
            _ended_span(self.span, outcome, kind, self.token)
        if self.instruments is not None:
            attributes = {
                **self.metric,
                "awaitly.outcome": outcome,
                "awaitly.run.resumed": self.resumed,
            }
            if kind is not None:
                attributes["error.type"] = kind
            self.instruments.runs.add(1, attributes)
            self.instruments.run_duration.record(seconds, attributes)
            if outcome == "lease_lost":
                self.instruments.lease_losses.add(1, self.metric)


def run_trace(o: RunOptions) -> RunTrace | None:
    """Start recording a run, or None (at the cost of one check) without an SDK."""
    if not gate.enabled():
        return None
    tracer, instruments = gate.tracer(), gate.instruments()
    if tracer is None and instruments is None:
        return None
    return RunTrace(o, tracer, instruments)


# --- what the plans call: each a no-op on a run not recorded ----------------


def began(state: RunState, stored_steps: int | None) -> None:
    if state.trace is not None:
        state.trace.began(stored_steps, state.resumed_traceparent)


def step_began(state: RunState, key: str, name: str) -> StepTrace | None:
    run = state.trace
    if run is None:
        return None
    step = StepTrace(run, key, name)
    run.steps[key] = step
    return step


def step_ended(
    state: RunState,
    step: StepTrace | None,
    key: str,
    result: Result[Any, Any] | None,
    raised: BaseException | None = None,
) -> None:
    if step is not None and state.trace is not None:
        state.trace.steps.pop(key, None)
        step.ended(result, raised)


def replayed(state: RunState, key: str, name: str, result: Result[Any, Any]) -> None:
    """A step answered from the row: a span of its own, marked replayed."""
    run = state.trace
    if run is None:
        return
    outcome = "error" if isinstance(result, Err) else "ok"
    kind = error_type(result.error) if isinstance(result, Err) else None
    if run.tracer is not None:
        attributes = {**run.ids, "awaitly.step.key": key, "awaitly.step.name": name}
        span = run.tracer.start_span(f"step {name}", attributes=attributes)
        span.set_attribute("awaitly.step.replayed", True)
        _ended_span(span, outcome, kind, None)
    if run.instruments is not None:
        attributes = {**run.metric, "awaitly.outcome": outcome, "awaitly.step.replayed": True}
        if kind is not None:
            attributes["error.type"] = kind
        run.instruments.steps.add(1, attributes)


def retrying(state: RunState, key: str, attempt: int, delay: float, failure: object) -> None:
    """Step ``key`` failed; ``attempt`` follows after ``delay`` seconds."""
    run = state.trace
    if run is None:
        return
    step = run.steps.get(key)
    kind = error_type(failure)
    if step is not None:
        step.attempt = attempt
        step.event(
            "retry",
            {"awaitly.step.attempt": attempt, "awaitly.retry.delay": delay, "error.type": kind},
        )
    if run.instruments is not None:
        run.instruments.retries.add(1, {**run.metric, "error.type": kind})


def timed_out(state: RunState, key: str, attempt: int, limit: float) -> None:
    run = state.trace
    step = None if run is None else run.steps.get(key)
    if step is not None:
        step.event("timeout", {"awaitly.step.attempt": attempt, "awaitly.timeout.limit": limit})


def checkpoint(state: RunState, outcome: str) -> None:
    """A snapshot save under the lease ended: ``saved``, ``lease_lost`` or ``failed``."""
    run = state.trace
    if run is not None and run.instruments is not None:
        run.instruments.checkpoints.add(1, {**run.metric, "awaitly.outcome": outcome})
