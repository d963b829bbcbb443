"""The wire format's reader and comparer on their own: what JSON.parse and JavaScript see."""

from __future__ import annotations

import pytest

from sqlalchemy_awaitly.wire import json_text
from sqlalchemy_awaitly.wire.documents import EncodedSteps, same_input, to_json


def nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("text", ["1e400", "[-1E+400]", '{"a":' + "1" + "0" * 400 + ".5}"])
def test_numbers_past_a_double_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="beyond a double"):
        json_text.loads(text)
    with pytest.raises(ValueError, match="beyond a double"):
        json_text.loads("[" * 2_000 + text + "]" * 2_000)  # the iterative reader too


def test_large_but_finite_numbers_and_lookalike_text_read() -> None:
    assert json_text.loads('[1e308, "1e400", 5e-324, 1e21]') == [1e308, "1e400", 5e-324, 1e21]


def test_inputs_compare_as_javascript_sees_them() -> None:
    # Node writes 2**60 as 1152921504606847000: the same double.
    assert same_input({"n": 2**60, "f": [1.0]}, {"f": [1], "n": 1152921504606847000})
    assert not same_input({"n": True}, {"n": 1})
    assert not same_input({"n": 2**53}, {"n": 2**53 + 2})
    assert not same_input([1, 2], [1, 2, 3])
    assert not same_input({"a": 1}, {"b": 1})
    assert same_input(nested(15_000), json_text.loads(json_text.dumps(nested(15_000))))
    assert not same_input(nested(15_000), nested(14_999))


@pytest.mark.parametrize(
    "key", ["s0", "a b", "é", "x\x7f", 'q"', "b\\s", "\x01", "\ud800x", "", "🙂", "x\u2028y"]
)
@pytest.mark.parametrize("value", [0, -5, 10**30, True, 1.5, "x", None, [1], {"a": 1}])
def test_encoded_steps_write_what_the_encoder_writes(key: str, value: object) -> None:
    """The shortcuts for plain keys and integer values give ``to_json``'s very text,
    in either key order of an outcome."""
    for outcome in ({"ok": True, "value": value}, {"value": value, "ok": True}):
        steps = EncodedSteps()
        steps.put(key, outcome)
        assert steps.key_json(key) == to_json(key)
        assert steps.json() == to_json({key: outcome})
