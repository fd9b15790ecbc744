"""RawDataset -> prepared dataset directory (layout.py): the one place that encodes data.

Steps: check every column the spec names; read only those columns of the log (labels and
behaviour conditions evaluated while reading, in float32 / bool); split by time; fit
vocabularies and bucket boundaries on the train split; encode every field to int32;
build point-in-time behaviour sequences (sequences.py); write the splits in parts.

Rules:
- Vocabularies are fitted on the train rows: a value seen at least `min_count` times gets
  an index 2, 3, ... (most frequent first, ties by value); PAD = 0, OOV = 1. Unseen, rare
  and null values (a missing value, or an id that does not join the users / items table)
  all map to OOV: "unknown" is one token, and PAD stays "no token" (sequence padding).
- Numeric fields (kind quantile / log) map to 2 + searchsorted(boundaries, v, "right"),
  boundaries fitted on train and stored in the schema; null / NaN map to OOV.
  quantile: the train rows' k/B quantiles (duplicates dropped, so skewed columns get fewer
  buckets); log: B buckets evenly spaced in log1p between the train min and max (values
  below 0 fall in the first bucket).
- Users / items fields are fitted per entity, weighted by the entity's train rows, and
  gathered through each row's users / items row, so no wide joined copy of the log is
  ever built. A log id that does not join is counted (rows and distinct ids) in stats.
- A bag (fields sharing FieldSpec.bag, the slots of a multi-valued column) is fitted as one
  vocabulary over all its slots; a missing value is PAD, a row without any value has OOV
  in its first slot.
- Labels are float32, NaN where missing (counted per split and task in stats.json).
- Behaviours from a condition get point-in-time event tables (sequences.py); a pre-built
  history column gives every row its own block of events (`row_blocks`), its last max_len
  ids, side codes looked up through the item key like warm-start events.

A prepare writes into a temporary directory beside OUT and renames it at the end, so a
failed or interrupted prepare never leaves a half-written OUT; an existing non-empty OUT
is refused unless overwrite=True, and is then replaced only by the finished directory.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from rich.console import Console

from infnet.data import layout
from infnet.data.schema import OOV, PAD, CategoricalField, Schema, SequenceSpec, Split, Task
from infnet.data.sequences import Events, HistoryIndex, event_table, row_blocks
from infnet.data.spec import BehaviourSpec, FieldSpec, RawDataset
from infnet.fsutil import atomic_directory
from infnet.metrics import auc

PART_ROWS = 1_000_000  # rows per part file of a split


class PrepareError(ValueError):
    """Bad input to prepare: names the frame, column, field or split that is wrong."""


# --- column checks ----------------------------------------------------------------------------
Frame = Literal["log", "users", "items"]


def _field_frame(f: FieldSpec, raw: RawDataset, log_cols: set[str]) -> Frame:
    """Where a field's column is read: the key columns and context fields from the log,
    user / item fields from the users / items table, else from the log."""
    src = f.source
    table = {"user": ("users", raw.users), "item": ("items", raw.items)}.get(f.group)
    keys = (raw.user_key, raw.item_key)
    if src not in keys and table and table[1] is not None and src in table[1].columns:
        return table[0]
    if src in log_cols:
        return "log"
    where = f"{table[0]} table or log" if table and table[1] is not None else "log"
    raise PrepareError(f"field {f.name!r} ({f.group}): column {src!r} not found in {where}")


def _check(raw: RawDataset, log_cols: set[str]) -> dict[str, Frame]:
    def need(cols: set[str], have: set[str] | list[str], frame: str, what: str) -> None:
        missing = sorted(set(cols) - set(have))
        if missing:
            raise PrepareError(f"{what}: column {missing[0]!r} not found in {frame}")

    need({raw.user_key, raw.item_key, raw.time_column}, log_cols, "log", "keys")
    if raw.users is not None:
        need({raw.user_key}, raw.users.columns, "users table", "user key")
    if raw.items is not None:
        need({raw.item_key}, raw.items.columns, "items table", "item key")
    frames = {f.name: _field_frame(f, raw, log_cols) for f in raw.fields}
    if len(frames) != len(raw.fields):
        raise PrepareError(f"duplicate field names: {[f.name for f in raw.fields]}")
    for t in raw.tasks:
        need({t.column}, log_cols, "log", f"task {t.name!r}")
    for b in raw.behaviours:
        cols = {b.column} if b.column is not None else set(b.condition.meta.root_names())
        need(cols, log_cols, "log", f"behaviour {b.name!r}")
    tasks = {t.name for t in raw.tasks}
    for task, col in raw.oracle.items():
        if task not in tasks:
            raise PrepareError(f"oracle for unknown task {task!r} (tasks: {sorted(tasks)})")
        need({col}, log_cols, "log", f"oracle of task {task!r}")
    if raw.split.column is not None:
        need({raw.split.column}, log_cols, "log", "split")
    item_fields = {f.name for f in raw.fields if f.group == "item"}
    for s in raw.side_fields:
        if s not in item_fields:
            raise PrepareError(
                f"side field {s!r} is not an item field (item fields: {sorted(item_fields)})"
            )
    if raw.behaviours and not raw.side_fields:
        raise PrepareError("behaviours are given but no side_fields")
    spec = {f.name: f for f in raw.fields}
    # Events known only by their item id (warm start, pre-built histories) get their side
    # codes through the item key: the item key's own field, or items-table fields.
    by_id = [
        f"behaviour {b.name!r} (pre-built column {b.column!r})" for b in raw.behaviours if b.column
    ]
    if raw.warm_start is not None:
        need(
            {raw.user_key, "behaviour", raw.item_key, raw.time_column},
            raw.warm_start.columns,
            "warm_start",
            "warm start",
        )
        by_id.append("warm-start events")
    for what in by_id:
        for s in raw.side_fields:
            if frames[s] == "log" and spec[s].source != raw.item_key:
                raise PrepareError(
                    f"side field {s!r} is read from log column {spec[s].source!r}; {what} "
                    "can only carry item-table fields and the item key"
                )
    for i, f in enumerate(raw.fields):
        if f.bag is None:
            continue
        first = next(g for g in raw.fields if g.bag == f.bag)
        if f.kind != "categorical" or (frames[f.name], f.group) != (
            frames[first.name],
            first.group,
        ):
            raise PrepareError(
                f"bag {f.bag!r}: field {f.name!r} must be categorical, in the same table and group "
                f"as {first.name!r}"
            )
        if f is not first and raw.fields[i - 1].bag != f.bag:
            raise PrepareError(
                f"bag {f.bag!r}: field {f.name!r} is not next to the bag's other fields"
            )
    return frames


# --- fitting and encoding ---------------------------------------------------------------------
@dataclass
class Encoded:
    codes: np.ndarray  # int32 [entities]
    vocab: pl.DataFrame  # value (str), index (int32), count (int64)
    field: CategoricalField
    values: pl.Series | None = None  # categorical: the vocabulary in the column's dtype


def _categorical(f: FieldSpec, values: pl.Series, weight: np.ndarray) -> Encoded:
    counts = (
        pl.DataFrame({"value": values, "count": weight})
        .filter(pl.col("value").is_not_null() & (pl.col("count") > 0))
        .group_by("value")
        .agg(pl.col("count").sum())
        .filter(pl.col("count") >= max(f.min_count, 1))
        .sort(["count", "value"], descending=[True, False])
        .with_columns(index=pl.int_range(2, pl.len() + 2, dtype=pl.Int32))
    )
    codes = values.replace_strict(
        counts["value"], counts["index"], default=OOV, return_dtype=pl.Int32
    )
    vocab = counts.select(pl.col("value").cast(pl.String), "index", pl.col("count").cast(pl.Int64))
    field = CategoricalField(name=f.name, group=f.group, vocab_size=len(vocab) + 2)
    return Encoded(codes.to_numpy(), vocab, field, counts["value"])


def _encode_bag(
    bag: list[FieldSpec], values: list[pl.Series], weight: np.ndarray
) -> list[tuple[FieldSpec, Encoded, int]]:
    """The K slots of a bag: one vocabulary fitted over all slots' values; a missing value is
    PAD, and an entity without any value gets OOV in its first slot ("unknown" is one token).
    Returns (field, encoding over entities, code of a row whose entity does not join)."""
    first = bag[0]
    joint = _categorical(
        FieldSpec(first.bag, first.group, min_count=first.min_count),
        pl.concat(values),
        np.concatenate([weight] * len(bag)),
    )
    K, L = len(bag), len(values[0])
    absent = np.concatenate([v.is_null().to_numpy() for v in values]).reshape(K, L)
    slots = np.where(absent, PAD, joint.codes.reshape(K, L)).astype(np.int32)  # [K, L]
    slots[0, absent.all(axis=0)] = OOV
    return [
        (
            f,
            Encoded(
                slots[k],
                joint.vocab,
                CategoricalField(
                    name=f.name, group=f.group, vocab_size=joint.field.vocab_size, bag=f.bag
                ),
                joint.values,
            ),
            OOV if k == 0 else PAD,
        )
        for k, f in enumerate(bag)
    ]


def _boundaries(f: FieldSpec, v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Bucket boundaries from the train values v (finite) with row weights w (> 0)."""
    if len(v) == 0:
        return np.empty(0)
    if f.kind == "quantile":
        order = np.argsort(v, kind="stable")
        v, cw = v[order], np.cumsum(w[order])
        q = np.arange(1, f.buckets) / f.buckets * cw[-1]
        return np.unique(v[np.minimum(np.searchsorted(cw, q, side="right"), len(v) - 1)])
    lo, hi = np.log1p(max(v.min(), 0.0)), np.log1p(max(v.max(), 0.0))
    return np.unique(np.expm1(np.linspace(lo, hi, f.buckets + 1)[1:-1]))


def _bucketized(f: FieldSpec, values: pl.Series, weight: np.ndarray) -> Encoded:
    if not values.dtype.is_numeric():
        raise PrepareError(
            f"field {f.name!r} ({f.kind}): column {f.source!r} is {values.dtype}, not numeric"
        )
    v = values.cast(pl.Float64).fill_null(np.nan).to_numpy()
    ok = np.isfinite(v)
    fit = ok & (weight > 0)
    b = _boundaries(f, v[fit], weight[fit].astype(np.float64))
    codes = np.where(ok, 2 + np.searchsorted(b, np.where(ok, v, 0.0), side="right"), OOV).astype(
        np.int32
    )
    edges = np.concatenate([[-np.inf], b, [np.inf]])
    count = np.bincount(codes[fit] - 2, weights=weight[fit], minlength=len(b) + 1).astype(np.int64)
    vocab = pl.DataFrame(
        {
            "value": [f"[{edges[i]:.6g}, {edges[i + 1]:.6g})" for i in range(len(b) + 1)],
            "index": np.arange(2, len(b) + 3, dtype=np.int32),
            "count": count,
        }
    )
    field = CategoricalField(
        name=f.name, group=f.group, vocab_size=len(b) + 3, boundaries=b.tolist()
    )
    return Encoded(codes, vocab, field)


def _encode(f: FieldSpec, values: pl.Series, weight: np.ndarray) -> Encoded:
    return (
        _categorical(f, values, weight)
        if f.kind == "categorical"
        else _bucketized(f, values, weight)
    )


def _row_index(keys: pl.Series, table: pl.DataFrame, key: str, frame: str) -> np.ndarray:
    """Row of `table` for each key (int32, -1 where the key does not join)."""
    if table[key].is_duplicated().any():
        dup = table.filter(table[key].is_duplicated())[key][0]
        raise PrepareError(f"{frame} table: duplicate {key} values (e.g. {dup!r})")
    joined = keys.to_frame(key).join(
        table.select(key).with_row_index("__row"), on=key, how="left", maintain_order="left"
    )
    return joined["__row"].cast(pl.Int32).fill_null(-1).to_numpy()


# --- split by time ----------------------------------------------------------------------------
def _fmt_time(t: int) -> str:
    return datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _split_ids(raw: RawDataset, log: pl.DataFrame, time_ms: np.ndarray) -> np.ndarray:
    """int8 [N]: 0 train, 1 valid, 2 test, -1 outside every split."""
    sid = np.full(len(time_ms), -1, dtype=np.int8)
    spec = raw.split
    if spec.bounds is not None:
        if set(spec.bounds) != set(layout.SPLITS):
            raise PrepareError(
                f"split bounds must name {list(layout.SPLITS)}, got {sorted(spec.bounds)}"
            )
        col = spec.column or raw.time_column
        values = log[col].to_numpy() if spec.column else time_ms
        edges = [spec.bounds[s] for s in layout.SPLITS]
        for (a0, a1), (b0, _) in zip(edges, edges[1:], strict=False):
            if not (a0 < a1 <= b0):
                raise PrepareError(
                    f"split bounds on {col!r} must be increasing and disjoint: {spec.bounds}"
                )
        for i, (lo, hi) in enumerate(edges):
            sid[(values >= lo) & (values < hi)] = i
        present = f"{col} {values.min()} .. {values.max()}"
        if not spec.column:
            present += f" ({_fmt_time(values.min())} .. {_fmt_time(values.max())})"
        where = {s: f"[{lo}, {hi}) on {col!r}" for s, (lo, hi) in spec.bounds.items()}
    else:
        r = np.asarray(spec.ratios, dtype=np.float64)
        if len(r) != 3 or (r <= 0).any() or r.sum() > 1 + 1e-9:
            raise PrepareError(
                f"split ratios must be 3 positive numbers summing to at most 1, got {spec.ratios}"
            )
        ts = np.sort(time_ms)
        n = len(ts)
        # round, not truncate: 360 * 0.7 is 251.99999999999997 in floating point
        cut = [ts[min(round(n * c), n - 1)] for c in np.cumsum(r)[:2]]
        # Rows are cut at times, so rows of equal time stay in one split.
        sid[time_ms < cut[0]] = 0
        sid[(time_ms >= cut[0]) & (time_ms < cut[1])] = 1
        sid[time_ms >= cut[1]] = 2
        present = (
            f"{raw.time_column} {ts[0]} .. {ts[-1]} ({_fmt_time(ts[0])} .. {_fmt_time(ts[-1])})"
        )
        where = {
            s: f"ratio {x:g} of the time-ordered rows"
            for s, x in zip(layout.SPLITS, r, strict=True)
        }
    counts = np.bincount(sid + 1, minlength=4)[1:]
    for name, c in zip(layout.SPLITS, counts, strict=True):
        if c == 0:
            raise PrepareError(f"split {name!r} ({where[name]}) is empty; the log holds {present}")
    return sid


# --- the pipeline -----------------------------------------------------------------------------
def prepare(raw: RawDataset, out: Path, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Prepare `raw` into directory `out`; returns the stats it writes to stats.json."""
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace it"
        )
    with atomic_directory(out) as tmp:
        stats = _prepare_into(raw, tmp, Console(stderr=True, quiet=not progress))
    return stats


def _prepare_into(raw: RawDataset, tmp: Path, console: Console) -> dict:
    t0 = time.perf_counter()

    def step(msg: str) -> None:
        console.log(f"[{time.perf_counter() - t0:6.1f}s] {raw.name}: {msg}")

    lf = raw.log.lazy()
    frames = _check(raw, set(lf.collect_schema().names()))
    specs = {f.name: f for f in raw.fields}

    # Read only the needed columns; labels and behaviour flags are computed while reading.
    step("reading the log")
    log_fields = sorted(
        {specs[n].source for n, fr in frames.items() if fr == "log"} - {raw.user_key, raw.item_key}
    )
    extra = [raw.split.column] if raw.split.column and raw.split.column not in log_fields else []
    label_exprs = []
    for t in raw.tasks:
        x = pl.col(t.column)
        if t.threshold is not None:
            x = (x >= t.threshold).cast(pl.Float32)
        elif t.transform == "log1p":
            x = x.cast(pl.Float64).log1p()
        label_exprs.append(x.cast(pl.Float32).alias(layout.label_col(t.name)))
    log = lf.select(
        pl.col(raw.user_key),
        pl.col(raw.item_key),
        pl.col(raw.time_column).cast(pl.Int64).alias(layout.TIME),
        *[pl.col(c) for c in log_fields + extra],
        *label_exprs,
        *[pl.col(c).cast(pl.Float32).alias(layout.oracle_col(t)) for t, c in raw.oracle.items()],
        *[
            b.condition.fill_null(False).alias(f"__behaviour__{b.name}")
            if b.column is None
            else pl.col(b.column).alias(f"__behaviour__{b.name}")
            for b in raw.behaviours
        ],
    ).collect(engine="streaming")
    N = len(log)
    if N == 0:
        raise PrepareError("the log is empty")
    if not log[raw.user_key].dtype.is_integer():
        raise PrepareError(
            f"log column {raw.user_key!r} (user key) must be integer, got {log[raw.user_key].dtype}"
        )
    for c in (raw.user_key, raw.item_key, layout.TIME):
        if log[c].null_count():
            raise PrepareError(f"log column {c!r} has {log[c].null_count()} null values")
    user = log[raw.user_key].cast(pl.Int64).to_numpy()
    time_ms = log[layout.TIME].to_numpy()

    step(f"{N:,} rows; splitting by time")
    sid = _split_ids(raw, log, time_ms)
    train = sid == 0
    split_rows = {s: np.flatnonzero(sid == i) for i, s in enumerate(layout.SPLITS)}
    for s, idx in split_rows.items():  # time-ordered within a split (stable)
        split_rows[s] = idx[np.argsort(time_ms[idx], kind="stable")]

    # users / items rows of each log row; -1 where the id does not join
    stats: dict = {"dataset": raw.name, "unjoined": {}}
    rows_of: dict[str, np.ndarray] = {}
    for frame, table, key in (
        ("users", raw.users, raw.user_key),
        ("items", raw.items, raw.item_key),
    ):
        if table is None:
            continue
        r = _row_index(log[key], table, key, frame)
        bad = r < 0
        rows_of[frame] = r
        stats["unjoined"][frame] = {
            "rows": int(bad.sum()),
            "ids": log[key].filter(pl.Series(bad)).n_unique(),
        }

    step(f"fitting {len(raw.fields)} fields on {int(train.sum()):,} train rows")
    codes: dict[str, np.ndarray] = {}  # int32 [N] per field
    encoded: dict[str, Encoded] = {}

    def source(f: FieldSpec) -> tuple[pl.Series, np.ndarray, np.ndarray | None]:
        """(values per entity, train rows per entity, entity of each log row or None)."""
        if frames[f.name] == "log":
            return log[f.source], train.astype(np.int64), None
        r = rows_of[frames[f.name]]
        table = raw.users if frames[f.name] == "users" else raw.items
        return table[f.source], np.bincount(r[train & (r >= 0)], minlength=len(table)), r

    def per_row(entity_codes: np.ndarray, r: np.ndarray | None, missing: int) -> np.ndarray:
        if r is None:
            return entity_codes
        return np.where(r >= 0, entity_codes[np.maximum(r, 0)], missing).astype(np.int32)

    for f in raw.fields:
        if f.bag is not None:
            if f.name not in encoded:
                bag = [g for g in raw.fields if g.bag == f.bag]
                _, weight, r = source(f)  # the bag's fields share their table (checked)
                for g, e, missing in _encode_bag(bag, [source(g)[0] for g in bag], weight):
                    encoded[g.name] = e
                    codes[g.name] = per_row(e.codes, r, missing)
            continue
        values, weight, r = source(f)
        e = _encode(f, values, weight)
        codes[f.name] = per_row(e.codes, r, OOV)
        encoded[f.name] = e
    log = log.drop(log_fields)  # raw field columns are encoded; free them

    (tmp / layout.VOCAB_DIR).mkdir()
    for name, e in encoded.items():
        e.vocab.write_parquet(tmp / layout.VOCAB_DIR / f"{name}.parquet")

    labels = {t.name: log[layout.label_col(t.name)].to_numpy() for t in raw.tasks}
    for t in raw.tasks:
        if t.kind == "binary":
            y = labels[t.name]
            bad = ~np.isnan(y) & (y != 0) & (y != 1)
            if bad.any():
                found = np.unique(y[bad])[:5].tolist()
                raise PrepareError(
                    f"task {t.name!r}: column {t.column!r} must be 0/1 for a binary task, found {found} "
                    "(give a threshold to binarise it)"
                )

    # behaviour sequences
    pointers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    seq_stats: dict = {}
    if raw.behaviours:
        step(f"building {len(raw.behaviours)} behaviour sequences")
        (tmp / layout.SEQ_DIR).mkdir()
        rows = np.concatenate(list(split_rows.values()))
        ws = _warm_start(raw, encoded, frames) if raw.warm_start is not None else None
        for b in raw.behaviours:
            if b.column is not None:
                ev, start, end, figures = _prebuilt(
                    b,
                    log[f"__behaviour__{b.name}"],
                    rows,
                    user,
                    time_ms,
                    raw.max_len,
                    lambda keys: _item_side_codes(raw, encoded, frames, keys),
                )
                pointers[b.name] = (start, end)
                _write_events(ev, raw.side_fields, tmp / layout.SEQ_DIR / f"{b.name}.parquet")
                length = end - start
                seq_stats[b.name] = {
                    "events": len(ev),
                    **figures,
                    "mean_len": {s: float(length[r].mean()) for s, r in split_rows.items()},
                    "empty": {s: float((length[r] == 0).mean()) for s, r in split_rows.items()},
                }
                continue
            is_event = log[f"__behaviour__{b.name}"].to_numpy()
            idx = np.flatnonzero(is_event)
            side = np.stack([codes[s][idx] for s in raw.side_fields], axis=1)
            u, t = user[idx], time_ms[idx]
            n_ws = 0
            if ws is not None:
                mine = ws[0] == b.name
                n_ws = int(mine.sum())
                u, t = np.concatenate([ws[1][mine], u]), np.concatenate([ws[2][mine], t])
                side = np.concatenate([ws[3][mine], side])
            ev = event_table(u, t, side)
            index = HistoryIndex(ev)
            # int32 pointers in memory (int64 in the files) while the table allows it
            dtype = np.int32 if len(ev) < 2**31 else np.int64
            start, end = np.zeros(N, dtype), np.zeros(N, dtype)
            for lo in range(0, len(rows), PART_ROWS):  # chunks bound the temporaries
                r = rows[lo : lo + PART_ROWS]
                start[r], end[r] = index.pointers(user[r], time_ms[r])
            pointers[b.name] = (start, end)
            _write_events(ev, raw.side_fields, tmp / layout.SEQ_DIR / f"{b.name}.parquet")
            length = np.minimum(end - start, raw.max_len)
            seq_stats[b.name] = {
                "events": len(ev),
                "warm_start_events": n_ws,
                "mean_len": {s: float(length[r].mean()) for s, r in split_rows.items()},
                "empty": {s: float((length[r] == 0).mean()) for s, r in split_rows.items()},
            }

    step("writing splits")
    oracle = {t: log[layout.oracle_col(t)].to_numpy() for t in raw.oracle}
    splits = []
    for s, idx in split_rows.items():
        (tmp / s).mkdir()
        for p, lo in enumerate(range(0, len(idx), PART_ROWS)):
            i = idx[lo : lo + PART_ROWS]
            cols = {f.name: codes[f.name][i] for f in raw.fields}
            cols[layout.USER] = user[i]
            cols[layout.TIME] = time_ms[i]
            cols |= {layout.label_col(t): y[i] for t, y in labels.items()}
            cols |= {layout.oracle_col(t): o[i] for t, o in oracle.items()}
            for b, (start, end) in pointers.items():
                cols[layout.seq_start_col(b)] = start[i].astype(np.int64)
                cols[layout.seq_end_col(b)] = end[i].astype(np.int64)
            pl.DataFrame(cols).write_parquet(tmp / s / f"part-{p:05d}.parquet")
        splits.append(
            Split(
                name=s,
                rows=len(idx),
                time_min=int(time_ms[idx].min()),
                time_max=int(time_ms[idx].max()),
            )
        )

    schema = Schema(
        dataset=raw.name,
        fields=[encoded[f.name].field for f in raw.fields],
        sequences=SequenceSpec(
            behaviours=[b.name for b in raw.behaviours],
            side_fields=list(raw.side_fields),
            max_len=raw.max_len,
            prebuilt=[b.name for b in raw.behaviours if b.column is not None],
        )
        if raw.behaviours
        else None,
        tasks=[
            Task(name=t.name, kind=t.kind, weight=t.weight, transform=t.transform)
            for t in raw.tasks
        ],
        user_key=raw.user_key,
        item_key=raw.item_key,
        time_column=raw.time_column,
        splits=splits,
    )
    schema.save(tmp / layout.SCHEMA)

    item = log[raw.item_key]
    stats |= _split_stats(raw, split_rows, user, item, labels, codes, oracle)
    stats["rows_outside_splits"] = int((sid < 0).sum())
    stats["sequences"] = seq_stats
    stats["source"] = raw.stats
    stats["seconds"] = round(time.perf_counter() - t0, 2)
    (tmp / layout.STATS).write_text(json.dumps(stats, indent=2))
    step(f"done: {', '.join(f'{s} {len(r):,}' for s, r in split_rows.items())} rows")
    return stats


def _warm_start(
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
        _item_side_codes(raw, encoded, frames, ws[raw.item_key]),
    )


def _item_side_codes(
    raw: RawDataset, encoded: dict[str, Encoded], frames: dict[str, Frame], keys: pl.Series
) -> np.ndarray:
    """int32 [len(keys), K]: the side codes of events known by their item id. Items-table
    fields through the id's items row, the item key's field through its vocabulary; an id
    that is unseen in train, does not join or does not convert is OOV."""
    r = None
    if raw.items is not None:
        ids = keys.cast(raw.items[raw.item_key].dtype, strict=False).rename(raw.item_key)
        r = _row_index(ids, raw.items, raw.item_key, "items")
    side = []
    for s in raw.side_fields:
        e = encoded[s]
        if frames[s] == "items":
            side.append(np.where(r >= 0, e.codes[np.maximum(r, 0)], OOV))
        else:  # the item key itself, through its vocabulary
            side.append(
                keys.cast(e.values.dtype, strict=False)
                .replace_strict(e.values, e.vocab["index"], default=OOV, return_dtype=pl.Int32)
                .to_numpy()
            )
    return np.stack(side, axis=1).astype(np.int32).reshape(len(keys), len(side))


def _prebuilt(
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


def _write_events(ev: Events, side_fields: list[str], path: Path) -> None:
    cols = {layout.USER: ev.user, layout.TIME: ev.time}
    cols |= {s: ev.side[:, k] for k, s in enumerate(side_fields)}
    pl.DataFrame(cols).write_parquet(path)


def _nan_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _mean(y: np.ndarray) -> float | None:
    """Mean of the non-missing labels; None (JSON null) when there are none."""
    y = y[~np.isnan(y)]
    return float(y.mean()) if len(y) else None


def _split_stats(
    raw: RawDataset,
    split_rows: dict[str, np.ndarray],
    user: np.ndarray,
    item: pl.Series,
    labels: dict[str, np.ndarray],
    codes: dict[str, np.ndarray],
    oracle: dict[str, np.ndarray],
) -> dict:
    rows = np.concatenate(list(split_rows.values()))
    out: dict = {
        "rows": {s: len(r) for s, r in split_rows.items()},
        "users": {"all": len(np.unique(user[rows]))}
        | {s: len(np.unique(user[r])) for s, r in split_rows.items()},
        "items": {"all": item.gather(rows).n_unique()}
        | {s: item.gather(r).n_unique() for s, r in split_rows.items()},
        "label_rate": {},
        "label_mean": {},
        "nan_labels": {},
        "oov_rate": {
            f.name: {s: float((codes[f.name][r] == OOV).mean()) for s, r in split_rows.items()}
            for f in raw.fields
        },
    }
    for s, r in split_rows.items():
        out["nan_labels"][s] = {t: int(np.isnan(y[r]).sum()) for t, y in labels.items()}
        out["label_rate"][s] = {
            t.name: _mean(labels[t.name][r]) for t in raw.tasks if t.kind == "binary"
        }
        out["label_mean"][s] = {
            t.name: _mean(labels[t.name][r]) for t in raw.tasks if t.kind == "regression"
        }
    binary = {t.name for t in raw.tasks if t.kind == "binary"}
    if oracle:
        out["oracle_auc"] = {}
        for s, r in split_rows.items():
            out["oracle_auc"][s] = {}
            for t in sorted(set(oracle) & binary):
                y, p = labels[t][r], oracle[t][r]
                ok = ~np.isnan(y) & ~np.isnan(p)
                out["oracle_auc"][s][t] = _nan_none(auc(y[ok], p[ok]))
    return out
