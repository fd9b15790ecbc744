"""Behaviour sequences of a prepare: warm-start events, events known only by their item id,
pre-built history columns (each row its own block), and the event tables written beside
the splits (sequences.py has the point-in-time index over them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from infnet.data import layout
from infnet.data.checks import Frame
from infnet.data.encoders import Encoded
from infnet.data.schema import OOV
from infnet.data.sequences import Events, row_blocks
from infnet.data.spec import BehaviourSpec, PrepareError, RawDataset

CHUNK = 1_000_000  # items per part of items.parquet


def row_index(keys: pl.Series, table: pl.DataFrame, key: str, frame: str) -> np.ndarray:
    """Row of `table` for each key (int32, -1 where the key does not join)."""
    if table[key].is_duplicated().any():
        dup = table.filter(table[key].is_duplicated())[key][0]
        raise PrepareError(f"{frame} table: duplicate {key} values (e.g. {dup!r})")
    joined = keys.to_frame(key).join(
        table.select(key).with_row_index("__row"), on=key, how="left", maintain_order="left"
    )
    return joined["__row"].cast(pl.Int32).fill_null(-1).to_numpy()


def warm_start_events(
    raw: RawDataset, encoded: dict[str, Encoded], frames: dict[str, Frame]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(behaviour names, user, time, side codes [W, K]) of the warm-start events."""
    ws = raw.warm_start
    known = {b.name for b in raw.behaviours if b.column is None}
    unknown = set(ws["behaviour"].unique().to_list()) - known
    if unknown:
        raise PrepareError(
            f"warm_start: unknown behaviours {sorted(unknown)} (behaviours built from the log: "
            f"{sorted(known)})"
        )
    return (
        ws["behaviour"].to_numpy(),
        ws[raw.user_key].cast(pl.Int64).to_numpy(),
        ws[raw.time_column].cast(pl.Int64).to_numpy(),
        item_side_codes(raw, encoded, frames, ws[raw.item_key]),
    )


def item_side_codes(
    raw: RawDataset, encoded: dict[str, Encoded], frames: dict[str, Frame], keys: pl.Series
) -> np.ndarray:
    """int32 [len(keys), K]: the side codes of events known by their item id. Items-table
    fields through the id's items row, the item key's field through its vocabulary; an id
    that is unseen in train, does not join or does not convert is OOV."""
    r = None
    if raw.items is not None:
        ids = keys.cast(raw.items[raw.item_key].dtype, strict=False).rename(raw.item_key)
        r = row_index(ids, raw.items, raw.item_key, "items")
    side = []
    for s in raw.side_fields:
        e = encoded[s]
        if frames[s] == "items":
            side.append(np.where(r >= 0, e.codes[np.maximum(r, 0)], OOV))
        else:  # the item key itself, through its vocabulary
            side.append(key_codes(e, keys))
    return np.stack(side, axis=1).astype(np.int32).reshape(len(keys), len(side))


def key_codes(e: Encoded, keys: pl.Series) -> np.ndarray:
    """int32 codes of raw ids under a fitted vocabulary; OOV where unseen or unconvertible."""
    return (
        keys.cast(e.values.dtype, strict=False)
        .replace_strict(e.values, e.vocab["index"], default=OOV, return_dtype=pl.Int32)
        .to_numpy()
    )


def write_items(
    raw: RawDataset, encoded: dict[str, Encoded], frames: dict[str, Frame], path: Path
) -> None:
    """layout.ITEMS from the items table: every item the table holds, so a server can give
    an item the log never showed its own side fields (only its id OOV). Written in parts
    of `CHUNK` items, so a large table is never held as codes all at once."""
    specs = {f.name: f for f in raw.fields}
    fields = [f.name for f in raw.fields if f.group == "item"]
    table = raw.items
    writer = None
    try:
        for start in range(0, len(table), CHUNK):
            keys = table[raw.item_key].slice(start, CHUNK)
            cols: dict[str, object] = {layout.ITEM: keys.cast(pl.String)}
            for name in fields:
                if frames[name] == "items":
                    cols[name] = encoded[name].codes[start : start + len(keys)]
                elif specs[name].source == raw.item_key:
                    cols[name] = key_codes(encoded[name], keys)
                else:  # read from the log: no value per item
                    cols[name] = np.full(len(keys), OOV, np.int32)
            part = pl.DataFrame(cols).with_columns(pl.col(fields).cast(pl.Int32)).to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(path, part.schema)
            writer.write_table(part)
    finally:
        if writer is not None:
            writer.close()


def prebuilt_blocks(
    b: BehaviourSpec,
    hist: pl.Series,
    rows: np.ndarray,
    user: np.ndarray,
    time_ms: np.ndarray,
    max_len: int,
    side_of: Callable[[pl.Series], np.ndarray],
) -> tuple[Events, np.ndarray, np.ndarray, dict]:
    """A pre-built history column -> (events, start [N], end [N], figures for stats.json):
    each row in `rows` gets its last min(b.max_len, max_len) ids as its own block."""
    if not isinstance(hist.dtype, pl.List):
        raise PrepareError(
            f"behaviour {b.name!r}: column {b.column!r} is {hist.dtype}, not a list of item ids"
        )
    n = min(b.max_len or max_len, max_len)
    order = rows[np.lexsort((time_ms[rows], user[rows]))]  # blocks in (user, time) order
    lists = hist.gather(order).list.drop_nulls()  # a missing cell stays null: no events
    full = lists.list.len().fill_null(0).to_numpy()
    length = np.minimum(full, n).astype(np.int64)
    ids = lists.list.tail(n).filter(pl.Series(length > 0)).explode()  # oldest first, per row
    events, s, e = row_blocks(user[order], time_ms[order], length, side_of(ids))
    start, end = np.zeros(len(hist), np.int64), np.zeros(len(hist), np.int64)
    start[order], end[order] = s, e
    return events, start, end, {"column": b.column, "truncated_rows": int((full > n).sum())}


def write_events(ev: Events, side_fields: list[str], path: Path) -> None:
    cols = {layout.USER: ev.user, layout.TIME: ev.time}
    cols |= {s: ev.side[:, k] for k, s in enumerate(side_fields)}
    pl.DataFrame(cols).write_parquet(path)
