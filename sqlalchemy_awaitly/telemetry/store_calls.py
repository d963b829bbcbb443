"""A span and a duration for each store call, named as OpenTelemetry's stable database
conventions name a client call (``db.system.name``, ``db.operation.name``, ...).

The store's own runner sends its statements straight to the driver, past the
cursor events OpenTelemetry's SQLAlchemy instrumentation hooks: these spans are
how its calls are seen, on that path and on a caller's connection alike. No
parameters are recorded: the statement text has placeholders only, and a failure
is named by its exception type, never by its message.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL

from ..faults import sqlstate_of
from ..statements import Op
from . import gate

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.trace import Span

    from ..dbapi import Outcome

Attributes = Mapping[str, Any]


def _verb(op: Op) -> str:
    """The SQL keyword of ``op``'s statement (an upsert is an INSERT)."""
    statement: Any = op.statement
    for flag, verb in (("is_select", "SELECT"), ("is_insert", "INSERT"), ("is_update", "UPDATE")):
        if getattr(statement, flag, False):
            return verb
    if getattr(statement, "is_delete", False):
        return "DELETE"
    words = str(statement).split(None, 1)
    return words[0].upper() if words else op.name


@dataclass(frozen=True)
class Shape:
    """What every call of one statement on one store records, built once."""

    span_name: str
    span_attributes: Attributes
    metric_attributes: Attributes
    returns_rows: bool


@dataclass
class Target:
    """Where one store's calls go, as the conventions name it."""

    system: str
    collection: str
    common: Attributes
    _shapes: dict[str, Shape] = field(default_factory=dict)

    def shape(self, op: Op) -> Shape:
        known = self._shapes.get(op.name)
        if known is None:
            verb = _verb(op)
            metric = {**self.common, "db.operation.name": verb, "awaitly.store.method": op.name}
            summary = f"{verb} {self.collection}"
            spanned = {**metric, "db.query.summary": summary}
            known = Shape(summary, spanned, metric, op.returns_rows)
            self._shapes[op.name] = known
        return known


def target_of(url: URL, dialect_name: str, collection: str) -> Target:
    """The connection's attributes, from the engine's URL (never its password)."""
    system = "postgresql" if dialect_name == "postgresql" else dialect_name
    common: dict[str, Any] = {"db.system.name": system, "db.collection.name": collection}
    if system != "sqlite":
        if url.database:
            common["db.namespace"] = url.database
        if url.host:
            common["server.address"] = url.host
            common["server.port"] = url.port or (5432 if system == "postgresql" else None)
    return Target(system, collection, {k: v for k, v in common.items() if v is not None})


@dataclass(slots=True)
class Watch:
    """One store call being recorded."""

    shape: Shape
    span: Span | None
    token: Token[Any] | None
    instruments: gate.Instruments | None
    started: float


def begin(target: Target, op: Op) -> Watch | None:
    """Start recording a call of ``op`` (its span current while it runs); None, at the
    cost of one check, when no SDK is set up."""
    if not gate.enabled():
        return None
    tracer, instruments = gate.tracer(), gate.instruments()
    if tracer is None and instruments is None:
        return None
    shape = target.shape(op)
    span = token = None
    if tracer is not None:
        span = tracer.start_span(
            shape.span_name, kind=gate.trace_api.SpanKind.CLIENT, attributes=shape.span_attributes
        )
        token = gate.context_api.attach(gate.trace_api.set_span_in_context(span))
    return Watch(shape, span, token, instruments, time.perf_counter())


def end(watch: Watch, outcome: Outcome | None, error: BaseException | None) -> None:
    """The call came back with ``outcome`` or raised ``error``."""
    seconds = time.perf_counter() - watch.started
    failed = None if error is None else gate.exception_type(error)
    span = watch.span
    if span is not None:
        if outcome is not None:
            rows = len(outcome.rows) if watch.shape.returns_rows else outcome.rowcount
            if watch.shape.returns_rows:
                span.set_attribute("db.response.returned_rows", rows)
            span.set_attribute("awaitly.store.rows", rows)
        if error is not None and failed is not None:
            span.set_attribute("error.type", failed)
            code = sqlstate_of(error)
            if code is not None:
                span.set_attribute("db.response.status_code", code)
            span.set_status(gate.trace_api.Status(gate.trace_api.StatusCode.ERROR, failed))
        if watch.token is not None:
            gate.context_api.detach(watch.token)
        span.end()
    if watch.instruments is not None:
        attributes = watch.shape.metric_attributes
        if failed is not None:
            attributes = {**attributes, "error.type": failed}
        watch.instruments.store_call_duration.record(seconds, attributes)
