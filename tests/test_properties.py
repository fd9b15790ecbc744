"""Property tests at the edges where outside input enters: rank requests, request context
values, dataset YAMLs, conditions and text cells. Each either gives a value or one error of
the type the caller turns into a message, never anything else. Example counts are bounded
so CI stays fast."""

from __future__ import annotations

import math

import numpy as np
import orjson
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infnet.config import ConfigError, validate
from infnet.data.encoders import FieldEncoder
from infnet.data.schema import OOV, CategoricalField
from infnet.data.sources.condition import parse_condition
from infnet.data.sources.table_config import TableConfig
from infnet.data.sources.table_values import number
from infnet.serving.requests import REASONS, RequestError, error_reason, parse_rank_request

FAST = settings(max_examples=150, deadline=None)

json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ids = st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(min_size=1, max_size=12)


def _dumps(x) -> bytes:
    try:
        return orjson.dumps(x)
    except TypeError:  # integers beyond 64 bits: JSON allows them, orjson does not write them
        import json

        return json.dumps(x).encode()


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["request_id", "user_id", "context", "candidates", "bid", "x"]), json_value
    )
)
def test_any_json_object_parses_or_names_a_field(data):
    try:
        req = parse_rank_request(_dumps(data), max_candidates=50)
    except RequestError as err:
        assert err.status in (400, 413, 422) and error_reason(err.field) in (*REASONS, "other")
        return
    assert 1 <= len(req.candidates) <= 50 and 0 <= req.timestamp <= 253_402_300_799_999


@FAST
@given(
    st.text(min_size=1, max_size=256),
    ids,
    st.integers(min_value=0, max_value=253_402_300_799_999),
    st.lists(ids, min_size=1, max_size=50),
    st.none() | st.floats(min_value=0, max_value=1e9),
)
def test_a_valid_request_round_trips(request_id, user, ts, candidates, bid):
    body = {
        "request_id": request_id,
        "user_id": user,
        "context": {"timestamp": ts},
        "candidates": candidates,
    }
    if bid is not None:
        body["bid"] = bid
    req = parse_rank_request(orjson.dumps(body), max_candidates=50)
    assert (req.request_id, req.user_id, req.timestamp, req.candidates) == (
        request_id,
        str(user),
        ts,
        candidates,
    )
    assert req.bid is None if bid is None else np.allclose(req.bid, bid)


@FAST
@given(json_value)
def test_a_bucketed_context_value_encodes_to_a_bucket_or_oov(value):
    bucketed = FieldEncoder(
        CategoricalField(name="x", group="context", vocab_size=6, boundaries=[0.0, 1.0, 2.0]), None
    )
    code = bucketed.encode(value)
    assert 0 < code < 6  # OOV or one of the 4 buckets
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        assert code == 2 + int(np.searchsorted([0.0, 1.0, 2.0], value, side="right"))


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab")
    pl.DataFrame(
        {"value": ["1", "a", "true"], "index": [2, 3, 4], "count": [5, 4, 3]}
    ).write_parquet(d / "tab.parquet")
    return d


def test_categorical_context_values_map_into_the_vocabulary(vocab_dir):
    enc = FieldEncoder(CategoricalField(name="tab", group="context", vocab_size=5), vocab_dir)

    @FAST
    @given(st.booleans() | st.integers() | st.floats() | st.text(max_size=10))
    def check(value):
        code = enc.encode(value)
        assert code in (OOV, 2, 3, 4)

    check()
    assert (enc.encode(1), enc.encode(1.0), enc.encode("a"), enc.encode(True)) == (2, 2, 3, 4)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(
            ["name", "inputs", "user_key", "item_key", "time", "columns", "tasks", "split", "bogus"]
        ),
        json_value,
    )
)
def test_any_yaml_mapping_validates_or_names_the_key(data):
    try:
        validate(TableConfig, data, where="t.yaml")
    except ConfigError as err:
        assert str(err).startswith("t.yaml: ")


@FAST
@given(st.text(max_size=60))
def test_any_condition_text_parses_or_is_one_config_error(text):
    try:
        parse_condition(text, "key", columns=["a", "b"])
    except ConfigError as err:
        assert str(err).startswith("key: ")


# Blank as polars' strip_chars (Unicode White_Space) sees it: Python's str.strip also strips
# the ASCII separators \x1c-\x1f, which are control characters, not blanks, to polars.
_SEPARATORS = str.maketrans({c: "x" for c in "\x1c\x1d\x1e\x1f"})


@FAST
@given(st.lists(st.none() | st.text(max_size=12), min_size=1, max_size=30))
def test_text_cells_parse_as_numbers_or_are_counted(cells):
    values, bad = number(pl.Series("c", cells, dtype=pl.String))
    assert len(values) == len(cells) == len(bad)
    for cell, v, b in zip(cells, values.to_list(), bad.to_list(), strict=True):
        if cell is None or not cell.translate(_SEPARATORS).strip():
            assert v is None and not b
        else:
            try:
                want = float(cell.translate(_SEPARATORS).strip())
            except ValueError:
                want = None
            if want is None:
                assert b or v is not None  # polars may read forms Python does not ("1_0")
            else:
                assert not b and (math.isnan(want) and math.isnan(v) or v == want)
