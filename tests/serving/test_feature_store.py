"""Feature store: snapshots agree with the loader's point-in-time rows, on SQLite and Redis;
versioned loads; unknown users and items; an unreachable store."""

from __future__ import annotations

import sqlite3

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from infnet.cli import app
from infnet.data import layout
from infnet.data.loader import PreparedDataset
from infnet.data.schema import OOV
from infnet.data.sequences import gap_buckets
from infnet.serving.snapshot import snapshot_from_prepared
from infnet.serving.stores import StoreUnavailable, open_store

from .helpers import first_test_rows, vocab_values


@pytest.fixture(scope="module")
def snapshot(small_prepared, test_as_of):
    return snapshot_from_prepared(small_prepared, as_of=test_as_of)


def check_against_loader(store, snapshot, prepared, as_of):
    """Each first test row's user codes, item codes and histories, looked up in the store,
    equal the loader's batch for that row."""
    data = PreparedDataset(prepared)
    schema = data.schema
    rows = first_test_rows(prepared, as_of, 20)
    batch = data.batch_at("test", rows)
    user_pos = [i for i, f in enumerate(schema.fields) if f.group == "user"]
    item_pos = [i for i, f in enumerate(schema.fields) if f.group == "item"]
    video = vocab_values(prepared, "video_id")
    times = pl.read_parquet(sorted((prepared / "test").glob("part-*.parquet")))[layout.TIME]
    meta = store.meta()
    assert meta.history_times
    assert meta.version == snapshot.meta.version
    nonempty = 0
    for r in range(len(rows)):
        item = video[int(batch.categorical[r, schema.field_index("video_id")])]
        found = store.lookup(meta, str(int(batch.user[r])), [item])
        assert (
            found.version == snapshot.meta.version and found.user_known and found.item_known.all()
        )
        np.testing.assert_array_equal(found.user_codes, batch.categorical[r, user_pos].numpy())
        np.testing.assert_array_equal(found.item_codes[0], batch.categorical[r, item_pos].numpy())
        np.testing.assert_array_equal(found.history, batch.seq_ids[r].numpy())
        np.testing.assert_array_equal(found.history_mask, batch.seq_mask[r].numpy())
        # the served time gaps at the row's time are the loader's (time-aware models)
        gap = gap_buckets(np.int64(times[int(rows[r])]), found.history_time, found.history_mask)
        np.testing.assert_array_equal(gap, batch.seq_gap[r].numpy())
        nonempty += int(found.history_mask.any())
    assert nonempty >= len(rows) // 2  # the comparison covers real histories


def test_sqlite_store_matches_the_loader(snapshot, small_prepared, test_as_of, tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'f.sqlite'}")
    store.write(snapshot)
    check_against_loader(store, snapshot, small_prepared, test_as_of)
    mode = sqlite3.connect(tmp_path / "f.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_redis_store_matches_the_loader(snapshot, small_prepared, test_as_of, redis_url):
    store = open_store(redis_url)
    store.write(snapshot)
    check_against_loader(store, snapshot, small_prepared, test_as_of)
    store.close()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_loads_are_versioned_and_unknown_ids_are_oov(
    backend, snapshot, small_prepared, tmp_path, request
):
    url = request.getfixturevalue("redis_url") if backend == "redis" else str(tmp_path / "f.sqlite")
    store = open_store(url)
    store.write(snapshot)
    first = store.meta()
    later = snapshot_from_prepared(small_prepared)  # every row: a new version, longer histories
    assert later.meta.version != first.version
    store.write(later)
    user = later.user_ids[0]
    found = store.lookup(first, user, [later.item_ids[0], "no-such-item", later.item_ids[1]])
    assert found.version == later.meta.version  # the lookup names the version it read
    np.testing.assert_array_equal(found.item_known, [True, False, True])
    assert (found.item_codes[1] == OOV).all()
    np.testing.assert_array_equal(found.item_codes[0], later.item_records[0])
    stranger = store.lookup(first, "no-such-user", [])
    assert not stranger.user_known and (stranger.user_codes == OOV).all()
    assert not stranger.history_mask.any() and (stranger.history == 0).all()
    assert store.meta(first.version).version == first.version  # metas of old loads stay readable
    store.close()


def test_unreachable_stores_raise_store_unavailable(tmp_path, own_redis, snapshot):
    with pytest.raises(StoreUnavailable, match="does not exist"):
        open_store(tmp_path / "missing.sqlite").fetch("1", ["2"])
    empty = open_store(own_redis.url)
    with pytest.raises(StoreUnavailable, match="holds no features"):
        empty.fetch("1", ["2"])
    own_redis.stop()
    with pytest.raises(StoreUnavailable, match="unreachable"):
        empty.fetch("1", ["2"])
    own_redis.start()
    empty.write(snapshot)  # reconnects by itself
    assert empty.fetch(snapshot.user_ids[0], [])[0] == snapshot.meta.version


def test_load_features_command(small_prepared, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "serve",
            "load-features",
            "--data",
            str(small_prepared),
            "--store",
            str(tmp_path / "cli.sqlite"),
        ],
    )
    assert result.exit_code == 0, result.output
    store = open_store(tmp_path / "cli.sqlite")
    meta = store.meta()
    assert meta.users == PreparedDataset(small_prepared).stats["users"]["all"]
    assert meta.version in result.output
    bad = CliRunner().invoke(
        app,
        [
            "serve",
            "load-features",
            "--data",
            str(tmp_path / "nope"),
            "--store",
            str(tmp_path / "x.sqlite"),
        ],
    )
    assert bad.exit_code != 0


def test_a_prebuilt_history_is_the_users_latest_block(tmp_path):
    """A pre-built behaviour stores each row's own history as a block; the store serves the
    user's latest block, never a mix of blocks (the in-log behaviours: the last n events)."""
    import polars as pl

    from data.fixtures import SHOP_YAML, write_shop
    from infnet.data import layout

    write_shop(tmp_path)
    (tmp_path / "shop.yaml").write_text(SHOP_YAML)
    out = tmp_path / "prepared"
    args = ["prepare", "table", "--config", str(tmp_path / "shop.yaml"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    data = PreparedDataset(out)
    seq = data.schema.sequences
    assert seq.prebuilt == ["recent"]
    f = seq.behaviours.index("recent")
    store = open_store(tmp_path / "shop.sqlite")
    store.write(snapshot_from_prepared(out))
    meta = store.meta()
    latest = (
        pl.concat(
            pl.read_parquet(out / s, columns=[layout.USER, layout.TIME]).with_columns(
                split=pl.lit(s), row=pl.int_range(pl.len())
            )
            for s in layout.SPLITS
        )
        .sort(layout.TIME, maintain_order=True)
        .group_by(layout.USER, maintain_order=True)
        .last()
    )
    shorter = 0
    for user, _, split, row in latest.iter_rows():
        expected = data.batch_at(split, [row])
        found = store.lookup(meta, str(user), [])
        np.testing.assert_array_equal(found.history[f], expected.seq_ids[0, f].numpy())
        np.testing.assert_array_equal(found.history_mask[f], expected.seq_mask[0, f].numpy())
        shorter += 0 < int(expected.seq_mask[0, f].sum()) < seq.max_len
    assert shorter > 0  # blocks shorter than max_len: where a mix of blocks would show
    store.close()


def test_an_item_only_in_the_items_table_gets_its_own_side_codes(tmp_path):
    """An item the log never showed is served with the side fields of its items-table row
    (brand, tags, price bucket), its id OOV, and marked cold; an item shown in train is not."""
    import json

    from data.fixtures import SHOP_YAML, write_shop

    write_shop(tmp_path)
    # sku999 has sku7's brand, tags and price: the same codes, under another (unseen) id
    with open(tmp_path / "items.jsonl", "a") as f:
        f.write(json.dumps({"sku": "sku999", "brand": "b1", "tags": ["x", "y"], "price": 12.0}))
        f.write("\n")
    (tmp_path / "shop.yaml").write_text(SHOP_YAML)
    out = tmp_path / "prepared"
    args = ["prepare", "table", "--config", str(tmp_path / "shop.yaml"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    items = pl.read_parquet(out / layout.ITEMS)
    assert items.height == 80 and "sku999" in items[layout.ITEM].to_list()
    store = open_store(tmp_path / "shop.sqlite")
    store.write(snapshot_from_prepared(out))
    meta = store.meta()
    found = store.lookup(meta, "100", ["sku7", "sku999", "sku-none"])
    assert found.item_known.tolist() == [True, True, False]
    assert found.item_cold.tolist() == [False, True, False]
    key = meta.item_fields.index("sku")
    assert found.item_codes[0, key] > OOV and found.item_codes[1, key] == OOV
    others = [i for i, f in enumerate(meta.item_fields) if f != "sku"]
    assert len(others) >= 3  # brand, the tag slots, price
    np.testing.assert_array_equal(found.item_codes[1, others], found.item_codes[0, others])
    assert (found.item_codes[1, others] > OOV).all()
    store.close()
