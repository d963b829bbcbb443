"""What the package tells OpenTelemetry: spans and metrics of store calls, runs and steps.

The ``opentelemetry-api`` package is an optional extra (``sqlalchemy-awaitly[otel]``);
nothing is recorded until the app sets up an SDK, and without one the cost is one
attribute read per call (:mod:`.gate`). See docs/observability.md.
"""
