"""Where a run records its waits in the snapshot, and reading them back.

awaitly 1.35 forgets a sleep or a retry's backoff cut short by a crash: the
resumed run sleeps it again in full, and retries from the first attempt. This
runner records each wait before it starts, in the snapshot's metadata (which
awaitly carries through unchanged), as ``{"sqlalchemyAwaitly": {"waits":
{step key: {"until": epoch ms[, "attempt": n]}}}}``. A record that is not
this shape is ignored: the step then waits, or retries, as awaitly would.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

WAITS = "sqlalchemyAwaitly"
REGISTERED = "workflow"  # a registered run's type, version and input (``registry.py``)
TRACEPARENT = "traceparent"  # the span of the run that wrote the row (``tracing.py``)


def waits_of(metadata: Mapping[str, Any], stored: Set[str]) -> dict[str, dict[str, int]]:
    """The waits recorded in ``metadata``, but for steps that have ended since."""
    section = metadata.get(WAITS)
    waits = section.get("waits") if isinstance(section, dict) else None
    if not isinstance(waits, dict):
        return {}
    found: dict[str, dict[str, int]] = {}
    for key, record in waits.items():
        if key in stored or not isinstance(record, dict):
            continue
        fields = {k: v for k, v in record.items() if k in ("until", "attempt")}
        if not all(type(v) is int for v in fields.values()) or "until" not in fields:
            continue
        if fields.get("attempt", 1) < 1:
            continue
        found[key] = fields
    return found
