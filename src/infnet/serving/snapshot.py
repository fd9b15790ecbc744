"""A prepared dataset -> one Snapshot of the feature store (stores/base.py): user and item
records and each user's recent histories, as the loader would give them."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import polars as pl

from infnet.data import layout
from infnet.data.fingerprint import vocab_fingerprint
from infnet.data.schema import OOV, PAD, Schema
from infnet.serving.stores.base import Snapshot, StoreMeta


def _latest(rows: pl.DataFrame, key: str, cols: list[str]) -> pl.DataFrame:
    """The most recent row of each key (rows sorted by time)."""
    return rows.group_by(key, maintain_order=True).agg(pl.col(c).last() for c in cols)


def snapshot_from_prepared(path: str | Path, *, as_of: int | None = None) -> Snapshot:
    """User features and item features from each entity's most recent row, and each user's
    last n events per behaviour (a pre-built behaviour: the user's latest row's own block);
    with `as_of`, only rows and events strictly before it. Items of the items table that no
    row with a known id holds (unseen in train, or never shown) come from items.parquet:
    their own side codes, the id OOV; the response marks them cold."""
    path = Path(path)
    schema = Schema.load(path / layout.SCHEMA)
    user_fields = [f.name for f in schema.fields if f.group == "user"]
    item_fields = [f.name for f in schema.fields if f.group == "item"]
    if schema.item_key not in item_fields:
        raise ValueError(
            f"{path}: the item key {schema.item_key!r} is not an item field of the schema, so "
            "items cannot be addressed by id"
        )
    parts = sorted(p for s in layout.SPLITS for p in (path / s).glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"{path}: no split part files; is it a prepared dataset?")
    rows = pl.scan_parquet(parts).select(layout.USER, layout.TIME, *user_fields, *item_fields)
    if as_of is not None:
        rows = rows.filter(pl.col(layout.TIME) < as_of)
    rows = rows.sort(layout.TIME, maintain_order=True).collect()
    if rows.is_empty():
        raise ValueError(f"{path}: no rows before as_of={as_of}")

    users = _latest(rows, layout.USER, user_fields).sort(layout.USER)
    user_ids = users[layout.USER].cast(pl.String).to_list()

    vocab = pl.read_parquet(path / layout.VOCAB_DIR / f"{schema.item_key}.parquet")
    other = [c for c in item_fields if c != schema.item_key]
    items = (
        _latest(rows.filter(pl.col(schema.item_key) > OOV), schema.item_key, other)
        .join(vocab.select("value", pl.col("index").alias(schema.item_key)), on=schema.item_key)
        .select("value", *item_fields)
    )
    if (path / layout.ITEMS).is_file():  # the items table's others: cold, id OOV
        table = pl.read_parquet(path / layout.ITEMS).rename({layout.ITEM: "value"})
        cold = table.select("value", *item_fields).join(items, on="value", how="anti")
        items = pl.concat([items, cold])
    items = items.sort(schema.item_key, "value")
    item_records = np.ascontiguousarray(items.select(item_fields).to_numpy().astype(np.int32))

    seq = schema.sequences
    behaviours = seq.behaviours if seq else []
    side = seq.side_fields if seq else []
    n = seq.max_len if seq else 0
    F, K = len(behaviours), len(side)
    lengths = np.zeros((len(users), F), np.int32)
    history = np.full((len(users), F, n, K), PAD, np.int32)
    times = np.zeros((len(users), F, n), np.int64)
    user_index = pl.DataFrame({layout.USER: users[layout.USER], "__u": np.arange(len(users))})
    for f, b in enumerate(behaviours):
        ev = pl.scan_parquet(path / layout.SEQ_DIR / f"{b}.parquet")
        if as_of is not None:
            ev = ev.filter(pl.col(layout.TIME) < as_of)
        if b in seq.prebuilt:  # each row's own block: the user's history is the latest one
            ev = ev.filter(pl.col(layout.TIME) == pl.col(layout.TIME).max().over(layout.USER))
        # rank 0 = the most recent event; the table is sorted by (user, time), ties stable
        ev = (
            ev.with_columns(
                rank=pl.len().over(layout.USER) - 1 - pl.int_range(pl.len()).over(layout.USER)
            )
            .filter(pl.col("rank") < n)
            .join(user_index.lazy(), on=layout.USER)
            .collect()
        )
        u, rank = ev["__u"].to_numpy(), ev["rank"].to_numpy()
        history[u, f, n - 1 - rank] = ev.select(side).to_numpy()
        times[u, f, n - 1 - rank] = ev[layout.TIME].cast(pl.Int64).to_numpy()
        np.maximum.at(lengths[:, f], u, rank + 1)
    user_records = np.concatenate(
        [
            users.select(user_fields).to_numpy().astype(np.int32),
            lengths,
            history.reshape(len(users), -1),
            times.reshape(len(users), -1).view(np.int32),  # each time_ms as two int32 words
        ],
        axis=1,
    )
    digest = hashlib.sha256(user_records.tobytes() + item_records.tobytes()).hexdigest()[:8]
    meta = StoreMeta(
        version=f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{digest}",
        loaded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        source=str(path.resolve()),
        as_of=as_of,
        schema_text=schema.to_json(),
        vocab_fingerprint=vocab_fingerprint(path / layout.VOCAB_DIR),
        user_fields=user_fields,
        item_fields=item_fields,
        behaviours=behaviours,
        side_fields=side,
        history_len=n,
        history_times=True,
        users=len(users),
        items=len(items),
    )
    return Snapshot(
        meta=meta,
        user_ids=user_ids,
        user_records=np.ascontiguousarray(user_records),
        item_ids=items["value"].to_list(),
        item_records=item_records,
    )
