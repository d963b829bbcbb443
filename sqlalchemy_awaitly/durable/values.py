"""Which values a step may return, and how outcomes and causes become JSON and back.

Step values go into the snapshot as JSON, and a resumed run (Python or
Node.js) gets back what JSON gives. So a value JSON would change is refused
at the step, with the path to it, instead of coming back different after a
resume: ``datetime``, ``Decimal``, ``bytes``, tuples and sets, NaN and
infinities, non-string dict keys, and integers a double cannot hold exactly
(past 2**53 JavaScript would round them; 2**60 it keeps). Convert them
yourself (``.isoformat()``, ``str()``, ``list()``) before returning.
"""

from __future__ import annotations

import traceback
from typing import Any

from ..validation import lone_surrogate
from ..wire import json_text
from .errors import UnsupportedValueError
from .results import Err, ReplayedException, UnexpectedError

MAX_SAFE_INTEGER = 2**53 - 1
_MAX_DEPTH = 100
_MAX_STRING_REPRESENTATION = 1000
_UNDEFINED_CAUSE = {
    "type": "thrown",
    "originalType": "undefined",
    "stringRepresentation": "undefined",
}

# awaitly's UnexpectedError, as it is stored for a step that threw.
_UNEXPECTED = {
    "_tag": "UnexpectedError",
    "name": "UnexpectedError",
    "code": "runtime-unexpected",
    "hint": "An unexpected exception escaped a step. Inspect cause; consider returning "
    "a typed Result instead of throwing.",
    "docsUrl": "https://jagreehal.github.io/awaitly/rules/#runtime-unexpected",
}


def check_json(value: Any, where: str, key: str | None = None) -> Any:
    """``value`` itself if JSON round-trips it exactly; else :class:`UnsupportedValueError`
    naming it as ``where`` (followed by ``key``, quoted: formatted only for the error,
    since every step's value is checked)."""
    problem = _json_problem(value, "", 0)
    if problem is not None:
        path, reason = problem
        at = f" at {path}" if path else ""
        if key is not None:
            where = f"{where} {key!r}"
        raise UnsupportedValueError(
            f"{where}{at} is {reason}: JSON (and so a resumed run) would not give it back "
            f"unchanged; convert it first (e.g. str(), .isoformat(), list())"
        )
    return value


def _exact_as_double(value: int) -> bool:
    """True if a double holds ``value`` exactly, so JavaScript keeps it as it is
    (2**60: yes; 2**53 + 1: no)."""
    try:
        return int(float(value)) == value
    except OverflowError:
        return False


def _json_problem(value: Any, path: str, depth: int) -> tuple[str, str] | None:
    if depth > _MAX_DEPTH:
        return path, f"nested deeper than {_MAX_DEPTH} levels"
    if type(value) is str:
        if lone_surrogate(value):
            return path, "a string with a lone surrogate (not storable as UTF-8 text)"
        return None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if type(value) is not int:
            return path, f"a {type(value).__name__} (an int subclass)"
        if abs(value) > MAX_SAFE_INTEGER and not _exact_as_double(value):
            return path, f"the integer {value}, which a JavaScript number cannot hold exactly"
        return None
    if type(value) is float:
        if value != value or value in (float("inf"), float("-inf")):
            return path, f"the float {value}"
        return None
    if type(value) is list:
        for i, item in enumerate(value):
            found = _json_problem(item, f"{path}[{i}]", depth + 1)
            if found:
                return found
        return None
    if type(value) is dict:
        for k, item in value.items():
            if type(k) is not str:
                return f"{path}[{k!r}]", f"a dict key of type {type(k).__name__}"
            found = _json_problem(item, f"{path}[{k!r}]", depth + 1)
            if found:
                return found
        return None
    return path, f"a {type(value).__name__}"


def text_of(value: object) -> str:
    """``str(value)`` that can be stored as UTF-8 (lone surrogates escaped)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def success_outcome(value: Any) -> dict[str, Any]:
    return {"ok": True, "value": value}


def nothing_outcome() -> dict[str, Any]:
    """A step with no value by nature (a sleep): as awaitly stores ``ok(undefined)``."""
    return {"ok": True}


def returned_failure(err: Err[Any], origin: str = "result") -> dict[str, Any]:
    """A step that returned ``Err(error, cause)``: ``meta.origin`` is ``result``
    (``throw`` for the typed error ``step.try_`` made of an exception)."""
    return {
        "ok": False,
        "error": err.error,
        "cause": encode_cause(err.cause),
        "meta": {"origin": origin},
    }


def timeout_failure(error: Any) -> dict[str, Any]:
    """A step that ran past its limit, as awaitly stores it: a thrown object."""
    cause: dict[str, Any] = {"type": "thrown", "originalType": _js_type_name(error)}
    cause["stringRepresentation"] = "[object Object]" if isinstance(error, dict) else text_of(error)
    cause["value"] = error
    return {"ok": False, "error": error, "cause": cause, "meta": {"origin": "throw"}}


def raised_result(exc: BaseException) -> Err[UnexpectedError]:
    """What a run sees of an exception a step (or the workflow) raised: awaitly's
    UnexpectedError, the exception as its cause."""
    return Err(UnexpectedError(f"{type(exc).__name__}: {text_of(exc)}"), exc)


def raised_failure(exc: BaseException) -> dict[str, Any]:
    """A step that raised: awaitly's UnexpectedError, the exception as the cause."""
    return {
        "ok": False,
        "error": {**_UNEXPECTED, "message": f"{type(exc).__name__}: {text_of(exc)}", "cause": {}},
        "cause": encode_exception(exc),
        "meta": {"origin": "throw"},
    }


def encode_exception(exc: BaseException, depth: int = 0) -> dict[str, Any]:
    """awaitly's serialized error: name, message, stack, and the chained cause."""
    encoded: dict[str, Any] = {"type": "error", "name": type(exc).__name__, "message": text_of(exc)}
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, chain=False))
    encoded["stack"] = text_of(stack.rstrip("\n"))
    if exc.__cause__ is not None and depth < 10:
        encoded["cause"] = encode_exception(exc.__cause__, depth + 1)
    return encoded


def encode_cause(cause: Any) -> dict[str, Any]:
    if cause is None:
        return dict(_UNDEFINED_CAUSE)
    if isinstance(cause, BaseException):
        return encode_exception(cause)
    text = text_of(cause)
    encoded: dict[str, Any] = {"type": "thrown", "originalType": _js_type_name(cause)}
    encoded["stringRepresentation"] = text[:_MAX_STRING_REPRESENTATION]
    if _json_problem(cause, "", 0) is None:
        encoded["value"] = cause
    if len(text) > _MAX_STRING_REPRESENTATION:
        encoded["truncated"] = True
    return encoded


def _js_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, dict):
        return "Object"
    return type(value).__name__


def replay(outcome: dict[str, Any]) -> Any:
    """A stored outcome as the step returns it: its value, or the ``Err`` to end the run."""
    if outcome["ok"]:
        return outcome.get("value")
    return Err(_replay_error(outcome), decode_cause(outcome.get("cause")))


def _replay_error(outcome: dict[str, Any]) -> Any:
    error = outcome.get("error")
    if isinstance(error, dict) and error.get("_tag") == "UnexpectedError":
        message = error.get("message")
        if not isinstance(message, str):
            cause = outcome.get("cause")
            if isinstance(cause, dict) and cause.get("type") == "error":
                name, text = cause.get("name", "Error"), cause.get("message", "")
                message = f"{_field_text(name)}: {_field_text(text)}"
            else:
                message = "a step raised"
        return UnexpectedError(message)
    return error


_MAX_REPLAYED_CAUSES = 100
"""Chained causes turned back into exceptions; a stored chain may be deeper (by hand)."""


def decode_cause(cause: Any) -> Any:
    """A stored cause as the run returns it: an exception, the thrown value, or None."""
    if not isinstance(cause, dict):
        return cause
    if cause.get("type") == "error":
        first = exc = _replayed(cause)
        for _ in range(_MAX_REPLAYED_CAUSES):
            inner = cause.get("cause")
            if not (isinstance(inner, dict) and inner.get("type") == "error"):
                break
            cause = inner
            exc.__cause__ = exc = _replayed(cause)
        return first
    if cause.get("type") == "thrown":
        if cause.get("originalType") == "undefined":
            return None
        return cause.get("value", cause.get("stringRepresentation"))
    return cause


def _replayed(cause: dict[str, Any]) -> ReplayedException:
    stack = cause.get("stack")
    return ReplayedException(
        _field_text(cause.get("name", "Error")),
        _field_text(cause.get("message", "")),
        stack if isinstance(stack, str) else None,
    )


def _field_text(value: Any) -> str:
    """A stored name or message as text: awaitly writes strings; anything else as its JSON."""
    return value if isinstance(value, str) else json_text.dumps(value)
