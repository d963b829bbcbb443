"""``*`` is the only wildcard: every other character, ``%``, ``_`` and ``\\`` too, is literal."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlalchemy_awaitly.patterns import next_prefix

ALPHABET = st.sampled_from([*"ab%_\\*?[]^.$AéZ✓\U0001f600 :", "\uffff", "\U0010ffff"])
KEYS = st.lists(st.text(ALPHABET, min_size=1, max_size=6), min_size=1, max_size=12, unique=True)


def reference_match(pattern: str, key: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, key, flags=re.DOTALL) is not None


def byte_order(keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-8"))


@st.composite
def keys_and_pattern(draw: Any) -> tuple[list[str], str]:
    keys = draw(KEYS)
    source = draw(st.sampled_from(keys))
    # Cut a real key into pieces and glue some back with '*', or invent one.
    pieces = draw(st.lists(st.sampled_from([*list(source), "*"]), max_size=8))
    pattern = draw(st.sampled_from([source, "".join(pieces), source[:2] + "*", "*" + source[-1:]]))
    return keys, pattern


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=keys_and_pattern())
def test_keys_match_exactly_like_the_reference(store: Any, data: tuple[list[str], str]) -> None:
    keys, pattern = data
    store.delete_many(store.keys("*"))
    store.set_many({k: "v" for k in keys})
    expected = byte_order([k for k in keys if reference_match(pattern, k)])
    assert store.keys(pattern) == expected


@given(st.text(ALPHABET, max_size=5), st.text(ALPHABET, max_size=3))
def test_next_prefix_bounds_every_extension(prefix: str, tail: str) -> None:
    upper = next_prefix(prefix)
    key = prefix + tail
    if upper is None:
        assert set(prefix) <= {"\U0010ffff"}
    else:
        assert key.encode() < upper.encode()
        assert prefix.encode() < upper.encode()
