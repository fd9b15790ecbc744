"""PreparedDataset on a small random dataset, checked against a brute-force reading of
the prepared files."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch

from infnet.data import layout
from infnet.data.loader import PreparedDataset
from infnet.data.prepare import prepare
from infnet.data.sequences import GAP_BUCKETS, gap_buckets
from infnet.data.spec import BehaviourSpec, FieldSpec, RawDataset, SplitSpec, TaskSpec

N, USERS, ITEMS, MAX_LEN = 600, 25, 40, 4


def random_raw(behaviours: bool = True) -> RawDataset:
    rng = np.random.default_rng(7)
    click = rng.integers(0, 2, N).astype(float)
    click[rng.choice(N, 20, replace=False)] = np.nan  # missing labels
    log = pl.DataFrame(
        {
            "user_id": rng.integers(100, 100 + USERS, N),
            "item_id": rng.integers(0, ITEMS, N),
            "time_ms": rng.integers(0, 300, N),  # many ties
            "hour": rng.integers(0, 24, N),
            "click": click,
            "like": rng.integers(0, 2, N),
        }
    )
    items = pl.DataFrame({"item_id": np.arange(ITEMS), "author": np.arange(ITEMS) % 7})
    return RawDataset(
        name="random",
        log=log,
        user_key="user_id",
        item_key="item_id",
        items=items,
        fields=[
            FieldSpec("item_id", "item"),
            FieldSpec("author", "item"),
            FieldSpec("hour", "context"),
        ],
        tasks=[TaskSpec("click", "click"), TaskSpec("like", "like")],
        behaviours=[
            BehaviourSpec("click", pl.col("click") == 1),
            BehaviourSpec("like", pl.col("like") == 1),
        ]
        if behaviours
        else [],
        side_fields=["item_id", "author"] if behaviours else [],
        max_len=MAX_LEN,
        split=SplitSpec(ratios=(0.6, 0.2, 0.2)),
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("loader") / "random"
    prepare(random_raw(), out, progress=False)
    return PreparedDataset(out)


def test_shapes_and_dtypes(data):
    b = data.batch_at("train", [0, 5, 7])
    assert b.categorical.shape == (3, 3) and b.categorical.dtype == torch.int64
    assert b.seq_ids.shape == (3, 2, MAX_LEN, 2) and b.seq_ids.dtype == torch.int64
    assert b.seq_mask.shape == (3, 2, MAX_LEN) and b.seq_mask.dtype == torch.bool
    assert b.labels.shape == (3, 2) and b.labels.dtype == torch.float32
    assert b.label_mask.shape == (3, 2) and b.user.dtype == torch.int64
    assert sum(data.num_rows(s) for s in layout.SPLITS) == N
    assert data.stats["rows"]["train"] == data.num_rows("train")


def test_sequences_match_brute_force(data):
    """Every row: the last MAX_LEN of its user's events strictly before its time, left-padded."""
    path = data.path
    events = {b: pl.read_parquet(path / layout.SEQ_DIR / f"{b}.parquet") for b in ("click", "like")}
    for split in layout.SPLITS:
        df = pl.read_parquet(path / split / "part-*.parquet")
        batch = data.batch_at(split, np.arange(len(df)))
        for i, row in enumerate(df.iter_rows(named=True)):
            for f, b in enumerate(("click", "like")):
                ev = events[b]
                mine = ev.filter(
                    (pl.col(layout.USER) == row[layout.USER])
                    & (pl.col(layout.TIME) < row[layout.TIME])
                )
                recent = mine.tail(MAX_LEN).select("item_id", "author").to_numpy()
                L = len(recent)
                mask = batch.seq_mask[i, f].numpy()
                assert mask.tolist() == [False] * (MAX_LEN - L) + [True] * L
                ids = batch.seq_ids[i, f].numpy()
                assert (ids[: MAX_LEN - L] == 0).all()  # padding is PAD
                np.testing.assert_array_equal(ids[MAX_LEN - L :], recent)  # most recent last
                gaps = row[layout.TIME] - mine.tail(MAX_LEN)[layout.TIME].to_numpy()
                want = [0] * (MAX_LEN - L) + [_bucket(g) for g in gaps]
                assert batch.seq_gap[i, f].tolist() == want


def _bucket(gap_ms: int) -> int:
    """The time-gap bucket, written out: under a minute 1, [2^(g-2), 2^(g-1)) minutes g."""
    minutes = gap_ms // 60_000
    return 1 if minutes < 1 else min(int(math.log2(minutes)) + 2, GAP_BUCKETS - 1)


def test_gap_buckets_on_known_gaps():
    minute = 60_000
    gaps = np.array([1, minute - 1, minute, 2 * minute - 1, 2 * minute, 4 * minute, 10**13, -5])
    got = gap_buckets(gaps, np.zeros_like(gaps), np.ones(len(gaps), bool))
    assert got.tolist() == [
        1,
        1,
        2,
        2,
        3,
        4,
        GAP_BUCKETS - 1,
        1,
    ]  # a skewed clock: "under a minute"
    assert got.tolist() == [_bucket(max(g, 0)) for g in gaps]
    assert gap_buckets(gaps, gaps, np.zeros(len(gaps), bool)).tolist() == [0] * len(gaps)


def test_categorical_and_labels(data):
    df = pl.read_parquet(data.path / "valid" / "part-*.parquet")
    b = data.batch_at("valid", np.arange(len(df)))
    np.testing.assert_array_equal(
        b.categorical.numpy(), df.select(data.schema.field_names).to_numpy()
    )
    y = df[layout.label_col("click")].to_numpy()
    assert (b.label_mask[:, 0].numpy() == ~np.isnan(y)).all()
    assert (b.labels[:, 0].numpy() == np.nan_to_num(y, nan=0.0)).all()  # missing -> 0, masked
    assert b.user.tolist() == df[layout.USER].to_list()


def test_seeded_shuffling(data):
    def users(**kw):
        return torch.cat([b.user for b in data.batches("train", 64, **kw)]).tolist()

    plain = users()
    assert plain == data.batch_at("train", np.arange(data.num_rows("train"))).user.tolist()
    a, b, c = users(shuffle=True, seed=3), users(shuffle=True, seed=3), users(shuffle=True, seed=4)
    assert a == b and a != c and a != plain
    assert sorted(a) == sorted(plain)  # a permutation: every row once
    first = next(data.batches("train", 64, shuffle=True, seed=3))
    again = data.batch_at(
        "train", np.random.default_rng(3).permutation(data.num_rows("train"))[:64]
    )
    assert torch.equal(first.seq_ids, again.seq_ids) and torch.equal(
        first.categorical, again.categorical
    )


def test_batch_sizes_and_drop_last(data):
    n = data.num_rows("train")
    sizes = [len(b) for b in data.batches("train", 100)]
    assert sizes == [100] * (n // 100) + ([n % 100] if n % 100 else [])
    assert [len(b) for b in data.batches("train", 100, drop_last=True)] == [100] * (n // 100)


def test_no_sequences(tmp_path):
    prepare(random_raw(behaviours=False), tmp_path / "o", progress=False)
    b = PreparedDataset(tmp_path / "o").batch_at("test", [0, 1])
    assert b.seq_ids.shape == (2, 0, 1, 1) and b.seq_mask.shape == (2, 0, 1)


def test_clear_errors(tmp_path, data):
    with pytest.raises(FileNotFoundError, match="prepared dataset directory not found"):
        PreparedDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="schema file not found"):
        PreparedDataset(tmp_path / "empty")
    (tmp_path / "old").mkdir()
    schema = json.loads((data.path / layout.SCHEMA).read_text()) | {"version": 99}
    (tmp_path / "old" / layout.SCHEMA).write_text(json.dumps(schema))
    with pytest.raises(ValueError, match="schema version 99 is not supported"):
        PreparedDataset(tmp_path / "old")
    with pytest.raises(KeyError, match="unknown split 'dev'"):
        data.num_rows("dev")
