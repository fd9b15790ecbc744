"""The out-of-core loader: exactly the in-memory loader's rows, every row once an epoch on
every shard layout, disjoint shards of whole row groups, and the bad inputs named."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from infnet.data.loader import PreparedDataset
from infnet.data.parts import PartsDataset, deal
from infnet.data.rows import Shard

FIELDS = ("categorical", "seq_ids", "seq_mask", "seq_gap", "labels", "label_mask", "user")


@pytest.fixture(scope="module")
def grouped(small_prepared, tmp_path_factory):
    """The small dataset with row groups of 300 rows (prepare writes 65,536)."""
    out = tmp_path_factory.mktemp("parts") / "prepared"
    shutil.copytree(small_prepared, out)
    for part in out.glob("*/part-*.parquet"):
        pq.write_table(pq.read_table(part), part, row_group_size=300)
    return out


def _rows(batches) -> list[tuple]:
    """Every row of the batches as one hashable tuple of all its inputs and labels."""
    out = []
    for b in batches:
        cols = [getattr(b, f).reshape(len(b), -1).to(torch.float64) for f in FIELDS]
        out += [tuple(r) for r in torch.cat(cols, 1).tolist()]
    return out


def _assert_batches_equal(a, b) -> None:
    for f in FIELDS:
        assert torch.equal(getattr(a, f), getattr(b, f)), f


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_stored_order_is_the_in_memory_loaders_batches(grouped, split):
    memory, parts = PreparedDataset(grouped), PartsDataset(grouped, memory_budget_mb=4)
    ours = list(parts.batches(split, 512))
    theirs = list(memory.batches(split, 512))
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        _assert_batches_equal(a, b)
    _assert_batches_equal(parts.batch_range(split, 250, 910), memory.batch_range(split, 250, 910))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_row_once_an_epoch_on_disjoint_shards(grouped, world):
    memory, parts = PreparedDataset(grouped), PartsDataset(grouped, memory_budget_mb=4)
    everything = sorted(_rows(memory.batches("train", 1000)))
    steps = math.ceil(memory.num_rows("train") / 512)
    seen = []
    for rank in range(world):
        batches = list(parts.batches("train", 512, shuffle=True, seed=3, shard=Shard(rank, world)))
        assert len(batches) == steps  # the same number of steps on every rank
        assert max(map(len, batches)) - min(map(len, batches)) <= 1
        seen += _rows(batches)
    assert sorted(seen) == everything
    units = parts.units("train")
    shards = deal([units[i] for i in np.random.default_rng(3).permutation(len(units))], world)
    assert sum(len(s) for s in shards) == len({(u.part, u.group) for s in shards for u in s})


def test_the_order_follows_the_seed_and_a_small_budget_still_shuffles_across_windows(grouped):
    # 1 MB holds a window of a few row groups: the epoch is read in several windows
    parts = PartsDataset(grouped, memory_budget_mb=1)
    assert 300 <= parts._window_rows("train", 512) < parts.num_rows("train") / 3
    first = _rows(parts.batches("train", 512, shuffle=True, seed=1))
    assert first == _rows(parts.batches("train", 512, shuffle=True, seed=1))
    assert first != _rows(parts.batches("train", 512, shuffle=True, seed=2))
    assert first != _rows(parts.batches("train", 512))
    assert sorted(first) == sorted(_rows(parts.batches("train", 512)))


def test_in_memory_shards_are_parts_of_the_global_batches(grouped):
    memory = PreparedDataset(grouped)
    whole = list(memory.batches("train", 510, shuffle=True, seed=4))
    halves = [
        list(memory.batches("train", 510, shuffle=True, seed=4, shard=Shard(r, 2))) for r in (0, 1)
    ]
    for k, batch in enumerate(whole):
        assert _rows([halves[0][k], halves[1][k]]) == _rows([batch])


def test_a_budget_that_holds_no_row_group_names_the_budget_needed(grouped):
    with pytest.raises(
        ValueError,
        match=r"budget of 0 MB does not hold one row group of 300 rows.*memory_budget_mb >= \d+",
    ):
        PartsDataset(grouped, memory_budget_mb=0.01).check()


def test_a_rank_without_rows_is_refused(grouped):
    parts = PartsDataset(grouped, memory_budget_mb=4)
    groups = len(parts.units("valid"))  # 900 rows: 3 row groups
    with pytest.raises(
        ValueError, match=f"rank 3 of 4 has 0 rows .*the split has {groups} row groups"
    ):
        next(parts.batches("valid", 8, shard=Shard(3, 4)))


def test_a_damaged_part_file_is_named(grouped, tmp_path):
    broken = tmp_path / "prepared"
    shutil.copytree(grouped, broken)
    part = sorted((broken / "test").glob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{part}: not a readable part file"):
        PartsDataset(broken).check()


def test_codes_outside_the_vocabulary_are_named_with_their_row_group(grouped, tmp_path):
    import polars as pl

    broken = tmp_path / "prepared"
    shutil.copytree(grouped, broken)
    part = sorted((broken / "train").glob("part-*.parquet"))[0]
    frame = pl.read_parquet(part)
    field = PreparedDataset(broken).schema.fields[0].name
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 700).then(10**6).otherwise(pl.col(field)).alias(field)
    )
    pq.write_table(frame.to_arrow(), part, row_group_size=300)
    with pytest.raises(
        ValueError, match=rf"{part} \(row group 2\): field {field!r} holds codes outside"
    ):
        list(PartsDataset(broken).batches("train", 512))
