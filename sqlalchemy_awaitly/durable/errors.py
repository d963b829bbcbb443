"""Exceptions for workflows that use the runner wrongly (the rest are returned as values)."""

from __future__ import annotations

from ..errors import InvalidInputError


class DurableUsageError(InvalidInputError):
    """The workflow uses the runner wrongly (a repeated step key, a value JSON would change).

    Raised out of ``run``, never recorded as a step's failure: fix the code and
    run again, and the step runs.
    """


class DuplicateStepKeyError(DurableUsageError):
    """Two steps of one run share a key; each outcome needs its own."""


class UnsupportedValueError(DurableUsageError):
    """A step value (or error value) that JSON would not give back unchanged."""
