"""``lowbit.train._toml.dumps`` read back by the standard library's TOML parser (the oracle)."""

from __future__ import annotations

import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.train import _toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

keys = st.text(min_size=1, max_size=8)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=12),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4))
tables = st.dictionaries(keys, values, max_size=5)
documents = st.dictionaries(
    keys,
    st.one_of(values, tables, st.lists(tables, min_size=1, max_size=3)),
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(documents)
def test_dumps_reads_back_equal(doc: dict) -> None:
    assert tomllib.loads(_toml.dumps(doc)) == doc


def test_special_floats_and_none() -> None:
    text = _toml.dumps(
        {"a": math.inf, "b": -math.inf, "c": math.nan, "d": None, "t": {"x": None, "y": 1e-300}}
    )
    back = tomllib.loads(text)
    assert back["a"] == math.inf and back["b"] == -math.inf and math.isnan(back["c"])
    assert "d" not in back and back["t"] == {"y": 1e-300}


def test_quoted_keys_and_nested_tables() -> None:
    doc = {
        "per layer": {"stem.0": {"weight": "int8"}, "fc": {"weight": "fp32"}},
        "a\n": 'q"\\\x7f\x00',
    }
    text = _toml.dumps(doc)
    assert '["per layer"."stem.0"]' in text
    assert tomllib.loads(text) == doc


@pytest.mark.parametrize("bad", [{"a": object()}, {"a": b"bytes"}, {1: 2}, {"a": [[{"b": 1}]]}])
def test_unwritable_values_raise_type_error(bad: dict) -> None:
    with pytest.raises(TypeError):
        _toml.dumps(bad)
