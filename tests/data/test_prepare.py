"""prepare() on a tiny hand-made RawDataset: every figure below is worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from infnet.data import layout
from infnet.data.prepare import PrepareError, prepare
from infnet.data.schema import OOV, Schema
from infnet.data.spec import BehaviourSpec, FieldSpec, RawDataset, SplitSpec, TaskSpec

# 12 rows: train = time [0, 100), valid = [100, 200), test = [200, 300).
LOG = pl.DataFrame(
    {
        "user_id": [1, 1, 2, 2, 3, 1, 3, 2, 1, 2, 3, 1],
        "item_id": [10, 11, 10, 12, 10, 11, 12, 10, 13, 99, 11, 10],
        "time_ms": [0, 10, 20, 30, 40, 50, 60, 70, 200, 210, 220, 200],
        "dur": [1.0, 2, 3, 4, 5, 6, 7, 8, 100, 0.5, None, 3],
        "click": [1, 0, 1, 1, 0, 1, 1, 0, 1, None, 0, 1],
        "watch": [0.0, 1, 3, 7, 0, 0, 1, 0, 15, 0, 0, 2],
        "p": [0.9, 0.2, 0.8, 0.7, 0.1, 0.6, 0.5, 0.3, 0.9, 0.5, 0.2, 0.8],
    }
).vstack(
    pl.DataFrame(
        {
            "user_id": [3],
            "item_id": [12],
            "time_ms": [150],
            "dur": [2.0],
            "click": [1],
            "watch": [1.0],
            "p": [0.4],
        }
    )
)
ITEMS = pl.DataFrame({"item_id": [10, 11, 12, 13], "author": ["a", "a", "b", "c"]})
USERS = pl.DataFrame({"user_id": [1, 2, 3], "age": [20, None, 30]})
BOUNDS = {"train": (0, 100), "valid": (100, 200), "test": (200, 300)}


def tiny(**changes) -> RawDataset:
    raw = dict(
        name="tiny",
        log=LOG,
        user_key="user_id",
        item_key="item_id",
        users=USERS,
        items=ITEMS,
        fields=[
            FieldSpec("item_id", "item"),
            FieldSpec("author", "item"),
            FieldSpec("age", "user"),
            FieldSpec("dur", "context", kind="quantile", buckets=4),
            FieldSpec("user_id", "user", min_count=4),
        ],
        tasks=[
            TaskSpec("click", "click"),
            TaskSpec("long", "watch", threshold=2.0),
            TaskSpec("watch", "watch", kind="regression", transform="log1p", weight=0.5),
        ],
        behaviours=[BehaviourSpec("click", pl.col("click") == 1)],
        side_fields=["item_id", "author"],
        max_len=3,
        split=SplitSpec(bounds=BOUNDS),
        oracle={"click": "p"},
        stats={"note": "hand-made"},
    )
    return RawDataset(**(raw | changes))


def read_split(out, split: str) -> pl.DataFrame:
    return pl.read_parquet(out / split / "part-*.parquet")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "out"
    stats = prepare(tiny(), out, progress=False)
    return out, stats


def test_layout_and_split_counts(prepared):
    out, stats = prepared
    assert sorted(p.name for p in out.iterdir()) == [
        "items.parquet",
        "schema.json",
        "sequences",
        "stats.json",
        "test",
        "train",
        "valid",
        "vocab",
    ]
    assert stats == json.loads((out / layout.STATS).read_text())
    assert stats["rows"] == {"train": 8, "valid": 1, "test": 4}
    schema = Schema.load(out / layout.SCHEMA)
    assert [(s.name, s.rows, s.time_min, s.time_max) for s in schema.splits] == [
        ("train", 8, 0, 70),
        ("valid", 1, 150, 150),
        ("test", 4, 200, 220),
    ]
    assert [t.weight for t in schema.tasks] == [1.0, 1.0, 0.5] and schema.tasks[
        2
    ].transform == "log1p"
    test = read_split(out, "test")
    assert test[layout.TIME].to_list() == [200, 200, 210, 220]  # time-ordered, stable
    assert stats["source"] == {"note": "hand-made"}


def test_vocabularies_fitted_on_train(prepared):
    out, _ = prepared
    # train items: 10 x4, 11 x2, 12 x2 -> 10 first, then ties by value
    vocab = pl.read_parquet(out / layout.VOCAB_DIR / "item_id.parquet")
    assert vocab.rows() == [("10", 2, 4), ("11", 3, 2), ("12", 4, 2)]
    assert pl.read_parquet(out / layout.VOCAB_DIR / "author.parquet").rows() == [
        ("a", 2, 6),
        ("b", 3, 2),
    ]
    schema = Schema.load(out / layout.SCHEMA)
    assert schema.field("item_id").vocab_size == 5 and schema.field("author").vocab_size == 4
    # user 1 has 3 train rows, user 2 has 3, user 3 has 2: min_count=4 keeps nobody
    assert schema.field("user_id").vocab_size == 2
    test = read_split(out, "test")
    # rows of test: (1, 13, t200), (1, 10, t200), (2, 99, t210), (3, 11, t220)
    assert test["item_id"].to_list() == [OOV, 2, OOV, 3]  # 13 unseen in train, 99 unknown
    assert test["author"].to_list() == [OOV, 2, OOV, 2]  # c unseen; 99 does not join
    assert test["user_id"].to_list() == [OOV] * 4
    assert test[layout.USER].to_list() == [1, 1, 2, 3]  # the raw key is kept for gAUC
    # age: null (user 2) maps to OOV, 20 and 30 are 3 train rows... user 1: 3 rows, user 3: 2
    train = read_split(out, "train")
    assert dict(zip(train[layout.USER], train["age"], strict=True)) == {1: 2, 2: OOV, 3: 3}


def test_quantile_boundaries(prepared):
    out, _ = prepared
    schema = Schema.load(out / layout.SCHEMA)
    # train dur = 1..8, one row each: the 1/4, 2/4, 3/4 quantiles are 3, 5, 7
    assert schema.field("dur").boundaries == [3.0, 5.0, 7.0]
    assert schema.field("dur").vocab_size == 2 + 4
    train = read_split(out, "train")
    assert train["dur"].to_list() == [2, 2, 3, 3, 4, 4, 5, 5]  # index = 2 + bucket
    test = read_split(out, "test")
    assert test["dur"].to_list() == [5, 3, 2, OOV]  # 100, 3, 0.5, null
    vocab = pl.read_parquet(out / layout.VOCAB_DIR / "dur.parquet")
    assert vocab["value"].to_list() == ["[-inf, 3)", "[3, 5)", "[5, 7)", "[7, inf)"]
    assert vocab["count"].to_list() == [2, 2, 2, 2]


def test_labels_and_stats(prepared):
    out, stats = prepared
    test = read_split(out, "test")
    assert test.schema[layout.label_col("click")] == pl.Float32
    click = test[layout.label_col("click")].to_numpy()
    assert np.isnan(click[2]) and click[[0, 1, 3]].tolist() == [1, 1, 0]
    assert test[layout.label_col("long")].to_list() == [1.0, 1.0, 0.0, 0.0]  # watch >= 2
    np.testing.assert_allclose(
        test[layout.label_col("watch")].to_numpy(), np.log1p([15, 2, 0, 0]), rtol=1e-6
    )
    assert stats["nan_labels"]["test"] == {"click": 1, "long": 0, "watch": 0}
    assert stats["label_rate"]["test"]["click"] == pytest.approx(2 / 3)
    assert stats["label_mean"]["train"]["watch"] == pytest.approx(
        np.log1p([0, 1, 3, 7, 0, 0, 1, 0]).mean()
    )
    assert stats["unjoined"]["items"] == {"rows": 1, "ids": 1}
    assert stats["unjoined"]["users"] == {"rows": 0, "ids": 0}
    assert stats["users"] == {"all": 3, "train": 3, "valid": 1, "test": 3}
    assert stats["items"] == {"all": 5, "train": 3, "valid": 1, "test": 4}
    # oracle AUC on train: positives p = .9 .8 .7 .6 .5, negatives .2 .1 .3: all ranked above
    assert stats["oracle_auc"]["train"]["click"] == 1.0
    # test (NaN label dropped): positives .9 .8, negative .2
    assert stats["oracle_auc"]["test"]["click"] == 1.0
    assert stats["oracle_auc"]["valid"]["click"] is None  # one class only
    assert layout.oracle_col("click") in test.columns


def test_sequences_are_strictly_before(prepared):
    out, stats = prepared
    ev = pl.read_parquet(out / layout.SEQ_DIR / "click.parquet")
    # click events (user, time, item): (1,0,10) (2,20,10) (2,30,12) (1,50,11) (3,60,12)
    # (3,150,12) (1,200,13) (1,200,10): sorted by (user, time), stable
    assert list(zip(ev[layout.USER], ev[layout.TIME], strict=True)) == [
        (1, 0), (1, 50), (1, 200), (1, 200), (2, 20), (2, 30), (3, 60), (3, 150),
    ]  # fmt: skip
    assert ev["item_id"].to_list() == [2, 3, OOV, 2, 2, 4, 4, 4]
    assert stats["sequences"]["click"]["events"] == 8
    test = read_split(out, "test")
    s, e = layout.seq_start_col("click"), layout.seq_end_col("click")
    # user 1 at t=200 sees its events at 0 and 50 but not its own two at 200
    assert list(zip(test[s], test[e], strict=True)) == [(0, 2), (0, 2), (4, 6), (6, 8)]
    train = read_split(out, "train")
    assert list(zip(train[s], train[e], strict=True))[:3] == [(0, 0), (0, 1), (4, 4)]


def test_warm_start_events_come_first(tmp_path):
    ws = pl.DataFrame(
        {
            "user_id": [2, 2],
            "behaviour": ["click", "click"],
            "item_id": [11, 13],
            "time_ms": [-5, -3],
        }
    )
    stats = prepare(tiny(warm_start=ws), tmp_path, progress=False)
    ev = pl.read_parquet(tmp_path / layout.SEQ_DIR / "click.parquet")
    train = read_split(tmp_path, "train")
    assert stats["sequences"]["click"]["warm_start_events"] == 2
    user2 = ev.filter(pl.col(layout.USER) == 2)
    assert user2[layout.TIME].to_list() == [-5, -3, 20, 30]
    assert user2["item_id"].to_list() == [3, OOV, 2, 4]  # 11 and 13 through the item vocabulary
    assert user2["author"].to_list() == [2, OOV, 2, 3]  # a, c (unseen in train), a, b
    # user 2's first train row (t=20) now has the 2 warm-start events behind it
    row = train.filter((pl.col(layout.USER) == 2) & (pl.col(layout.TIME) == 20))
    assert (row[layout.seq_end_col("click")] - row[layout.seq_start_col("click")]).item() == 2


def test_ratio_split_by_time(tmp_path):
    stats = prepare(tiny(split=SplitSpec(ratios=(0.5, 0.25, 0.25))), tmp_path / "o", progress=False)
    # 13 sorted times: 0 10 20 30 40 50 60 70 150 200 200 210 220; cuts at index 6 (t=60) and 9 (t=200)
    assert stats["rows"] == {"train": 6, "valid": 3, "test": 4}


def test_empty_split_names_split_and_range(tmp_path):
    bounds = BOUNDS | {"test": (300, 400)}
    with pytest.raises(
        PrepareError, match=r"split 'test' \(\[300, 400\).*empty.*time_ms 0 \.\. 220"
    ):
        prepare(tiny(split=SplitSpec(bounds=bounds)), tmp_path / "o", progress=False)
    assert list(tmp_path.iterdir()) == []  # no OUT and no temporary directory left


def test_missing_column_names_column_and_frame(tmp_path):
    with pytest.raises(
        PrepareError,
        match=r"field 'author' \(item\): column 'writer' not found in items table or log",
    ):
        prepare(
            tiny(fields=[FieldSpec("author", "item", column="writer")]),
            tmp_path / "o",
            progress=False,
        )
    with pytest.raises(PrepareError, match=r"task 'x': column 'nope' not found in log"):
        prepare(tiny(tasks=[TaskSpec("x", "nope")]), tmp_path / "o", progress=False)
    with pytest.raises(PrepareError, match=r"behaviour 'like'.*'is_like' not found in log"):
        prepare(
            tiny(behaviours=[BehaviourSpec("like", pl.col("is_like") == 1)]),
            tmp_path / "o",
            progress=False,
        )


def test_failed_prepare_leaves_nothing_and_keeps_old_out(tmp_path):
    out = tmp_path / "out"
    bad = tiny(log=LOG.with_columns(pl.col("click").replace(0, 2)))  # fails after reading
    with pytest.raises(PrepareError, match=r"task 'click': column 'click' must be 0/1.*\[2.0\]"):
        prepare(bad, out, progress=False)
    assert list(tmp_path.iterdir()) == []
    prepare(tiny(), out, progress=False)
    before = (out / layout.STATS).read_text()
    with pytest.raises(PrepareError):
        prepare(bad, out, overwrite=True, progress=False)
    assert (out / layout.STATS).read_text() == before  # the old OUT survives a failed overwrite
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_overwrite_refused_then_replaced(tmp_path):
    out = tmp_path / "out"
    prepare(tiny(), out, progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare(tiny(), out, progress=False)
    (out / "stale.txt").write_text("old")
    stats = prepare(
        tiny(split=SplitSpec(ratios=(0.5, 0.25, 0.25))), out, overwrite=True, progress=False
    )
    assert stats["rows"]["train"] == 6 and not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_log_bucketization_and_lazy_log(tmp_path):
    raw = tiny(
        log=LOG.lazy(),
        fields=[FieldSpec("item_id", "item"), FieldSpec("dur", "context", kind="log", buckets=3)],
        behaviours=[],
        side_fields=[],
        oracle={},
    )
    prepare(raw, tmp_path / "o", progress=False)
    schema = Schema.load(tmp_path / "o" / layout.SCHEMA)
    assert schema.sequences is None
    # train dur 1..8: log1p evenly from log(2) to log(9) in 3 steps
    expected = np.expm1(np.linspace(math.log(2), math.log(9), 4)[1:-1])
    np.testing.assert_allclose(schema.field("dur").boundaries, expected)


def test_regression_targets_carry_the_train_splits_mean_and_std(prepared, tmp_path):
    out, _ = prepared
    tasks = {t.name: t for t in Schema.load(out / layout.SCHEMA).tasks}
    train_watch = np.log1p([0, 1, 3, 7, 0, 0, 1, 0])  # after the transform, train rows only
    assert tasks["watch"].mean == pytest.approx(train_watch.mean())
    assert tasks["watch"].std == pytest.approx(train_watch.std())
    assert (tasks["click"].mean, tasks["click"].std) == (0.0, 1.0)  # binary: no scale
    assert (tasks["long"].mean, tasks["long"].std) == (0.0, 1.0)
    # the stored labels stay on their (transformed) scale: the model's z is mapped back
    np.testing.assert_allclose(
        read_split(out, "train")[layout.label_col("watch")].to_numpy(), train_watch, rtol=1e-6
    )
    raw_scale = prepare(
        tiny(tasks=[TaskSpec("watch", "watch", kind="regression", standardise=False)], oracle={}),
        tmp_path / "raw",
        progress=False,
    )
    assert raw_scale["rows"]["train"] == 8
    watch = Schema.load(tmp_path / "raw" / layout.SCHEMA).tasks[0]
    assert (watch.mean, watch.std) == (0.0, 1.0)


def test_shares_of_rows_unseen_in_train(prepared):
    _, stats = prepared
    # test rows by time: items 13, 10 (t=200), 99 (210), 11 (220); train saw 10, 11, 12
    assert stats["unseen"]["test"] == {"user": 0.0, "item": 0.5, "either": 0.5}
    assert stats["unseen"]["valid"] == {"user": 0.0, "item": 0.0, "either": 0.0}
    assert stats["unseen"]["train"] == {"user": 0.0, "item": 0.0, "either": 0.0}
