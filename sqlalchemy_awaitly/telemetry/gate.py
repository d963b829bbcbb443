"""Whether the app has set up OpenTelemetry, asked on every call at the cost of an
attribute read.

The API's own answer, ``trace.get_tracer_provider()``, costs about 1.2 µs and a no-op
span about 7 µs, a fifth of a store read on SQLite, paid on every call by every app
that installs the API without an SDK. So the store reads the
API's global providers itself and keeps what it made of each (a tracer, the
instruments) until the app sets another. Without the API, or with no SDK set (the
API's proxy or no-op providers), nothing is made and nothing is recorded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as context_api
    from opentelemetry import metrics as metrics_api
    from opentelemetry import trace as trace_api
except ImportError:  # the optional extra is not installed
    context_api = None  # type: ignore[assignment]
    metrics_api = None  # type: ignore[assignment]
    trace_api = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, Meter
    from opentelemetry.trace import Tracer

__all__ = [
    "Instruments",
    "context_api",
    "enabled",
    "exception_type",
    "fast_gate",
    "instruments",
    "metrics_api",
    "trace_api",
    "tracer",
]

SCOPE = "sqlalchemy_awaitly"
# Seconds, as the semantic conventions advise for db.client.operation.duration.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
_UNSET: Any = object()


def exception_type(error: BaseException) -> str:
    """``error.type`` / ``exception.type`` for an exception: its fully qualified class name."""
    kind = type(error)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _version() -> str | None:
    try:
        return metadata.version("sqlalchemy-awaitly")
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Instruments:
    """Every metric the package records, made on one meter."""

    store_call_duration: Histogram
    runs: Counter
    run_duration: Histogram
    steps: Counter
    step_duration: Histogram
    retries: Counter
    checkpoints: Counter
    lease_losses: Counter

    @classmethod
    def on(cls, meter: Meter) -> Instruments:
        def seconds(name: str, about: str) -> Histogram:
            return meter.create_histogram(
                name, "s", about, explicit_bucket_boundaries_advisory=DURATION_BUCKETS
            )

        return cls(
            store_call_duration=seconds(
                "db.client.operation.duration", "Duration of the store's database calls."
            ),
            runs=meter.create_counter("awaitly.runs", "{run}", "Runs ended, by outcome."),
            run_duration=seconds("awaitly.run.duration", "Duration of runs, by outcome."),
            steps=meter.create_counter(
                "awaitly.steps", "{step}", "Steps ended, run or replayed, by outcome."
            ),
            step_duration=seconds("awaitly.step.duration", "Duration of the steps run."),
            retries=meter.create_counter("awaitly.step.retries", "{retry}", "Step retries."),
            checkpoints=meter.create_counter(
                "awaitly.checkpoints", "{checkpoint}", "Snapshots saved, by outcome."
            ),
            lease_losses=meter.create_counter(
                "awaitly.lease.losses", "{loss}", "Runs that lost their lease."
            ),
        )


class _Signal:
    """One of the API's global providers and what was made of it, made again when the
    app sets another (tests reset the globals between cases, as OpenTelemetry's do)."""

    def __init__(self, module: Any, attribute: str, env: str, getter: str) -> None:
        self._module, self._attribute, self._env, self._getter = module, attribute, env, getter
        self._provider: Any = _UNSET
        self._made: Any = None

    def current(self) -> Any:
        provider = getattr(self._module, self._attribute, _UNSET)
        if provider is self._provider:
            return self._made
        return self._remake(provider)

    def _remake(self, provider: Any) -> Any:
        seen = provider
        if provider is _UNSET or (provider is None and self._env in os.environ):
            # An API without the attribute, or a provider named by environment
            # variable (which the getter loads and sets): ask the API itself.
            provider = getattr(self._module, self._getter)()
        made = None if provider is None or _is_noop(provider) else self._make(provider)
        if seen is not _UNSET:  # an unknown API is asked on every call: slower, still right
            self._provider, self._made = seen, made
        return made

    def _make(self, provider: Any) -> Any:
        raise NotImplementedError


def _is_noop(provider: object) -> bool:
    """The API's stand-ins: a proxy (no SDK set yet) or a no-op provider."""
    return type(provider).__name__ in {
        "ProxyTracerProvider",
        "NoOpTracerProvider",
        "_ProxyMeterProvider",
        "NoOpMeterProvider",
    }


class _Tracing(_Signal):
    def _make(self, provider: Any) -> Tracer:
        return provider.get_tracer(SCOPE, _version())  # type: ignore[no-any-return]


class _Metering(_Signal):
    def _make(self, provider: Any) -> Instruments:
        return Instruments.on(provider.get_meter(SCOPE, _version()))


_tracing = (
    None
    if trace_api is None
    else _Tracing(
        trace_api, "_TRACER_PROVIDER", "OTEL_PYTHON_TRACER_PROVIDER", "get_tracer_provider"
    )
)
_metering = (
    None
    if metrics_api is None
    else _Metering(
        metrics_api._internal,
        "_METER_PROVIDER",
        "OTEL_PYTHON_METER_PROVIDER",
        "get_meter_provider",
    )
)


def _enabled_by_attributes() -> bool:
    return (
        trace_api._TRACER_PROVIDER is not None or metrics_api._internal._METER_PROVIDER is not None
    )


def _always() -> bool:
    return True


def _never() -> bool:
    return False


def fast_gate() -> bool:
    """Whether the installed API keeps its providers where the gate reads them (a test
    fails if an upgrade moves them: every call would then take the slower way)."""
    return (
        trace_api is not None
        and metrics_api is not None
        and hasattr(trace_api, "_TRACER_PROVIDER")
        and hasattr(metrics_api._internal, "_METER_PROVIDER")
    )


def _choose_enabled() -> Callable[[], bool]:
    if trace_api is None or metrics_api is None:
        return _never
    named = (
        "OTEL_PYTHON_TRACER_PROVIDER" in os.environ or "OTEL_PYTHON_METER_PROVIDER" in os.environ
    )
    return _enabled_by_attributes if fast_gate() and not named else _always


# Asked first on every call (about 0.1 µs): False, record nothing; True, an SDK may be
# set, so ask tracer() and instruments().
enabled = _choose_enabled()


def tracer() -> Tracer | None:
    """The package's tracer on the app's SDK, or None when spans would go nowhere."""
    return None if _tracing is None else _tracing.current()  # type: ignore[no-any-return]


def instruments() -> Instruments | None:
    """The package's metrics on the app's SDK, or None when they would go nowhere."""
    return None if _metering is None else _metering.current()  # type: ignore[no-any-return]
