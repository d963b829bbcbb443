"""JSON text as awaitly's rows hold it: every stored document is read and written here.

Node.js writes with ``JSON.stringify`` and reads with ``JSON.parse``; a value
Python reads and writes back must parse, in Node, to what Node stored. Three
things Python's ``json`` does not do that way on its own:

- **Lone surrogates** (JavaScript text cut inside an emoji). ``JSON.stringify``
  escapes them (``"\\ud83d"``); ``json.loads`` turns the escape into a lone
  surrogate character, which ``json.dumps(ensure_ascii=False)`` writes back
  raw, and which no UTF-8 database column can hold. :func:`dumps` escapes
  them again.
- **Depth.** ``JSON.stringify`` in Node 20 nests about 4,000 levels by
  default; Python's C parser and encoder stop near 1,000 with
  ``RecursionError`` (and since Python 3.12 their C recursion cannot be
  raised). Deeper text goes through an iterative reader and writer here, up to
  :data:`MAX_DEPTH` levels; beyond it, :class:`TooDeep`.
- **``NaN`` and ``Infinity``**, which ``JSON.parse`` refuses: :func:`loads`
  refuses them too, and :func:`dumps` never writes them.

The fast paths are the ``json`` module's own; the rest runs only for text
that needs it.
"""

from __future__ import annotations

import copy
import json
import json.decoder
import math
import re
from collections.abc import Callable
from json.scanner import NUMBER_RE
from typing import Any, TypeVar

T = TypeVar("T")

# The json module's own string reader (C): the text, the index after the
# opening quote, strict -> the string and the index after its closing quote.
scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]

MAX_DEPTH = 20_000
"""Levels of nesting read and written: Node 20's ``JSON.stringify`` manages about
4,200 with its default stack; a row deeper than this is not one anyone wrote."""


class TooDeep(ValueError):
    """Nested deeper than :data:`MAX_DEPTH` levels."""

    def __init__(self) -> None:
        super().__init__(f"nested deeper than {MAX_DEPTH:,} levels")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"the non-standard constant {name}, which JSON.parse refuses")


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(
            f"the number {text[:40]} is beyond a double, which JSON.stringify never writes"
        )
    return number


# Text in which a number may be too large for a double (a long exponent or
# a long run of digits); only such text pays for checking each float.
_MAYBE_HUGE = re.compile(r"[eE]\+?0*[1-9]\d{2}|\d{300}")


def loads(text: str) -> Any:
    """Parse ``text`` as ``JSON.parse`` would, however deep Node nests it.

    What ``JSON.stringify`` never writes is refused with ``ValueError``:
    ``NaN``, ``Infinity``, and numbers beyond a double (``1e400``).
    """
    parse_float = _finite if _MAYBE_HUGE.search(text) else float
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=parse_float)
    except RecursionError:
        return _loads_deep(text, parse_float)


# Built once: ``json.dumps`` with options builds a new encoder on every call,
# a tenth of a checkpoint's Python (the encoder keeps no state between calls).
_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(value: Any) -> str:
    """Compact JSON text for ``value`` that UTF-8 can hold and ``JSON.parse`` reads back."""
    try:
        text = _COMPACT.encode(value)
    except RecursionError:
        text = _dumps_deep(value)
    if text.isascii():
        return text
    return _SURROGATE.sub(_escaped, text)


def pretty(value: Any) -> str:
    """Indented JSON for people to read (compact past the depth ``json`` indents)."""
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False)
    except RecursionError:
        text = _dumps_deep(value)
    return text if text.isascii() else _SURROGATE.sub(_escaped, text)


SCALARS = frozenset({str, int, float, bool, type(None)})
"""The types of JSON's scalars: immutable, never awaitable, nothing inside to copy."""


def copy_of(value: T) -> T:
    """A deep copy of a JSON value, however deep it nests (``copy.deepcopy`` recurses)."""
    if type(value) in SCALARS:  # most step values: nothing to copy, no deepcopy call
        return value
    try:
        return copy.deepcopy(value)
    except RecursionError:
        copied: T = loads(dumps(value))
        return copied


def same(a: Any, b: Any) -> bool:
    """Whether two JSON values are deeply equal as JavaScript sees them after ``JSON.parse``.

    Numbers are doubles (``1`` and ``1.0`` are one number, and so are two
    integers past 2**53 that round alike), booleans are not numbers, and key
    order does not matter. Iterative, so any depth :func:`loads` reads compares.
    """
    pairs = [(a, b)]
    while pairs:
        x, y = pairs.pop()
        if isinstance(x, dict):
            if not isinstance(y, dict) or x.keys() != y.keys():
                return False
            pairs.extend((v, y[k]) for k, v in x.items())
        elif isinstance(x, (list, tuple)):
            if not isinstance(y, (list, tuple)) or len(x) != len(y):
                return False
            pairs.extend(zip(x, y, strict=True))
        elif _is_number(x) and _is_number(y):
            if _as_double(x) != _as_double(y):
                return False
        elif type(x) is not type(y) or x != y:
            return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_double(number: float) -> float:
    try:
        return float(number)
    except OverflowError:  # an integer past the double range: JSON.parse reads Infinity
        return math.copysign(math.inf, number)


def _escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


# --- the iterative reader and writer, for text deeper than the C ones go -------------

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_LITERALS = {"true": True, "false": False, "null": None}


class _Reader:
    def __init__(self, text: str, parse_float: Callable[[str], float]) -> None:
        self.text = text
        self.pos = 0
        self.parse_float = parse_float

    def skip(self) -> str:
        """Skip whitespace; the next character ('' at the end)."""
        match = _WHITESPACE.match(self.text, self.pos)
        assert match is not None  # it matches the empty string
        self.pos = match.end()
        return self.text[self.pos : self.pos + 1]

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{what} at character {self.pos}")

    def key(self) -> str:
        if self.skip() != '"':
            raise self.fail("expected a property name in double quotes")
        name, self.pos = scanstring(self.text, self.pos + 1, True)
        if self.skip() != ":":
            raise self.fail("expected ':'")
        self.pos += 1
        return name

    def scalar(self) -> Any:
        text, pos = self.text, self.pos
        if text.startswith('"', pos):
            string, self.pos = scanstring(text, pos + 1, True)
            return string
        for word, literal in _LITERALS.items():
            if text.startswith(word, pos):
                self.pos = pos + len(word)
                return literal
        match = NUMBER_RE.match(text, pos)
        if match is None:
            raise self.fail("expected a value")
        self.pos = match.end()
        integer, fraction, exponent = match.groups()
        if fraction or exponent:
            return self.parse_float(integer + (fraction or "") + (exponent or ""))
        return int(integer)


def _loads_deep(text: str, parse_float: Callable[[str], float]) -> Any:
    reader = _Reader(text, parse_float)
    # Open containers, innermost last, each with the key its next value goes under.
    open_: list[tuple[dict[str, Any] | list[Any], str | None]] = []
    while True:
        head = reader.skip()
        if head in ("{", "["):
            if len(open_) >= MAX_DEPTH:
                raise TooDeep()
            reader.pos += 1
            close = "}" if head == "{" else "]"
            if reader.skip() == close:
                reader.pos += 1
                value: Any = {} if head == "{" else []
            else:
                open_.append(({}, reader.key()) if head == "{" else ([], None))
                continue
        else:
            value = reader.scalar()
        # Put the finished value in its container, and close those it completes.
        while True:
            if not open_:
                if reader.skip():
                    raise reader.fail("extra data")
                return value
            container, key = open_[-1]
            if isinstance(container, list):
                container.append(value)
            else:
                container[key] = value  # type: ignore[index]
            after = reader.skip()
            reader.pos += 1
            if after == ",":
                if isinstance(container, dict):
                    open_[-1] = (container, reader.key())
                break
            if after != ("]" if isinstance(container, list) else "}"):
                reader.pos -= 1
                raise reader.fail("expected ',' or the end of the container")
            value = container
            open_.pop()


def _dumps_deep(value: Any) -> str:
    parts: list[str] = []
    # Open containers: their remaining items, whether they are dicts, and
    # whether an item has been written yet.
    open_: list[list[Any]] = []

    def start(item: Any) -> None:
        if isinstance(item, dict):
            parts.append("{")
            open_.append([iter(item.items()), True, False])
        elif isinstance(item, (list, tuple)):
            parts.append("[")
            open_.append([iter(item), False, False])
        else:
            parts.append(_COMPACT.encode(item))
        if len(open_) > MAX_DEPTH:
            raise TooDeep()

    start(value)
    while open_:
        frame = open_[-1]
        items, is_dict, written = frame
        try:
            item = next(items)
        except StopIteration:
            parts.append("}" if is_dict else "]")
            open_.pop()
            continue
        if written:
            parts.append(",")
        frame[2] = True
        if is_dict:
            key, item = item
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
            parts.append(json.dumps(key, ensure_ascii=False) + ":")
        start(item)
    return "".join(parts)
