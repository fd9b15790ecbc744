"""RawDataset -> prepared dataset directory (layout.py): the one place that encodes data.

Stages, each in its own module: check every column the spec names (checks.py); read only
those columns of the log (labels and behaviour conditions evaluated while reading, in
float32 / bool); split by time (splits.py); fit vocabularies and bucket boundaries on the
train split and encode every field to int32 (encoders.py); build point-in-time behaviour
sequences (behaviours.py, sequences.py); write the splits in parts; figures for
stats.json (stats.py).

Rules:
- Encoding rules: encoders.py.
- Users / items fields are fitted per entity, weighted by the entity's train rows, and
  gathered through each row's users / items row, so no wide joined copy of the log is
  ever built. A log id that does not join is counted (rows and distinct ids) in stats.
- A bag (fields sharing FieldSpec.bag, the slots of a multi-valued column) is fitted as one
  vocabulary over all its slots; a missing value is PAD, a row without any value has OOV
  in its first slot.
- Labels are float32, NaN where missing (counted per split and task in stats.json).
- With an items table, items.parquet holds every item of it (also those the log never
  showed) with its item field codes, for the feature store.
- Behaviours from a condition get point-in-time event tables (sequences.py); a pre-built
  history column gives every row its own block of events (`row_blocks`), its last max_len
  ids, side codes looked up through the item key like warm-start events.

A prepare writes into a temporary directory beside OUT and renames it at the end, so a
failed or interrupted prepare never leaves a half-written OUT; an existing non-empty OUT
is refused unless overwrite=True, and is then replaced only by the finished directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console

from infnet.data import layout
from infnet.data.behaviours import (
    item_side_codes,
    prebuilt_blocks,
    row_index,
    warm_start_events,
    write_events,
    write_items,
)
from infnet.data.checks import Frame, check_columns
from infnet.data.encoders import Encoded, fit_bag, fit_field
from infnet.data.schema import OOV, Schema, SequenceSpec, Split, Task
from infnet.data.sequences import HistoryIndex, event_table
from infnet.data.spec import FieldSpec, PrepareError, RawDataset
from infnet.data.splits import split_ids
from infnet.data.stats import split_stats
from infnet.fsutil import atomic_directory, refuse_overlap

__all__ = ["PrepareError", "prepare"]

PART_ROWS = 1_000_000  # rows per part file of a split


def prepare(
    raw: RawDataset,
    out: Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    inputs: Sequence[Path] = (),
) -> dict:
    """Prepare `raw` into directory `out`; returns the stats it writes to stats.json.
    `inputs` (the files `raw` was read from) may not be, hold or contain `out`."""
    out = Path(out)
    refuse_overlap(out, inputs)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(
            f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace it"
        )
    with atomic_directory(out) as tmp:
        stats = _prepare_into(raw, tmp, Console(stderr=True, quiet=not progress, log_path=False))
    return stats


def _prepare_into(raw: RawDataset, tmp: Path, console: Console) -> dict:
    t0 = time.perf_counter()

    def step(msg: str) -> None:
        console.log(f"[{time.perf_counter() - t0:6.1f}s] {raw.name}: {msg}")

    lf = raw.log.lazy()
    frames = check_columns(raw, set(lf.collect_schema().names()))

    step("reading the log")
    log, log_fields = _read_log(raw, lf, frames)
    N = len(log)
    user = log[raw.user_key].cast(pl.Int64).to_numpy()
    time_ms = log[layout.TIME].to_numpy()

    step(f"{N:,} rows; splitting by time")
    sid = split_ids(raw, log, time_ms)
    train = sid == 0
    split_rows = {s: np.flatnonzero(sid == i) for i, s in enumerate(layout.SPLITS)}
    for s, idx in split_rows.items():  # time-ordered within a split (stable)
        split_rows[s] = idx[np.argsort(time_ms[idx], kind="stable")]

    stats: dict = {"dataset": raw.name, "unjoined": {}}
    rows_of = _join_tables(raw, log, stats["unjoined"])

    step(f"fitting {len(raw.fields)} fields on {int(train.sum()):,} train rows")
    codes, encoded = _fit_fields(raw, frames, log, train, rows_of)
    log = log.drop(log_fields)  # raw field columns are encoded; free them
    (tmp / layout.VOCAB_DIR).mkdir()
    for name, e in encoded.items():
        e.vocab.write_parquet(tmp / layout.VOCAB_DIR / f"{name}.parquet")

    if raw.items is not None:
        write_items(raw, encoded, frames, tmp / layout.ITEMS)
    labels = {t.name: log[layout.label_col(t.name)].to_numpy() for t in raw.tasks}
    _check_labels(raw, labels)

    pointers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    seq_stats: dict = {}
    if raw.behaviours:
        step(f"building {len(raw.behaviours)} behaviour sequences")
        pointers, seq_stats = _build_sequences(
            raw, tmp, log, frames, encoded, codes, user, time_ms, split_rows
        )

    step("writing splits")
    oracle = {t: log[layout.oracle_col(t)].to_numpy() for t in raw.oracle}
    splits = _write_splits(raw, tmp, split_rows, codes, user, time_ms, labels, oracle, pointers)
    scales = _target_scales(raw, labels, split_rows["train"])
    _schema(raw, encoded, splits, scales).save(tmp / layout.SCHEMA)

    stats |= split_stats(raw, split_rows, user, log[raw.item_key], labels, codes, oracle)
    stats["rows_outside_splits"] = int((sid < 0).sum())
    stats["sequences"] = seq_stats
    stats["source"] = raw.stats
    stats["seconds"] = round(time.perf_counter() - t0, 2)
    (tmp / layout.STATS).write_text(json.dumps(stats, indent=2))
    step(f"done: {', '.join(f'{s} {len(r):,}' for s, r in split_rows.items())} rows")
    return stats


def _read_log(
    raw: RawDataset, lf: pl.LazyFrame, frames: dict[str, Frame]
) -> tuple[pl.DataFrame, list[str]]:
    """Only the needed columns; labels and behaviour flags computed while reading."""
    specs = {f.name: f for f in raw.fields}
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
    if len(log) == 0:
        raise PrepareError("the log is empty")
    if not log[raw.user_key].dtype.is_integer():
        raise PrepareError(
            f"log column {raw.user_key!r} (user key) must be integer, got {log[raw.user_key].dtype}"
        )
    for c in (raw.user_key, raw.item_key, layout.TIME):
        if log[c].null_count():
            raise PrepareError(f"log column {c!r} has {log[c].null_count()} null values")
    return log, log_fields


def _join_tables(raw: RawDataset, log: pl.DataFrame, unjoined: dict) -> dict[str, np.ndarray]:
    """The users / items row of each log row (-1 where the id does not join, counted)."""
    rows_of: dict[str, np.ndarray] = {}
    for frame, table, key in (
        ("users", raw.users, raw.user_key),
        ("items", raw.items, raw.item_key),
    ):
        if table is None:
            continue
        r = row_index(log[key], table, key, frame)
        bad = r < 0
        rows_of[frame] = r
        unjoined[frame] = {
            "rows": int(bad.sum()),
            "ids": log[key].filter(pl.Series(bad)).n_unique(),
        }
    return rows_of


def _fit_fields(
    raw: RawDataset,
    frames: dict[str, Frame],
    log: pl.DataFrame,
    train: np.ndarray,
    rows_of: dict[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, Encoded]]:
    """Every field fitted on the train rows (user / item fields per entity, weighted by its
    train rows) and its int32 codes per log row."""
    codes: dict[str, np.ndarray] = {}
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
                for g, e, missing in fit_bag(bag, [source(g)[0] for g in bag], weight):
                    encoded[g.name] = e
                    codes[g.name] = per_row(e.codes, r, missing)
            continue
        values, weight, r = source(f)
        e = fit_field(f, values, weight)
        codes[f.name] = per_row(e.codes, r, OOV)
        encoded[f.name] = e
    return codes, encoded


def _check_labels(raw: RawDataset, labels: dict[str, np.ndarray]) -> None:
    for t in raw.tasks:
        y = labels[t.name]
        infinite = np.isinf(y)
        if infinite.any():  # NaN is a missing label; an infinity would poison the loss
            raise PrepareError(
                f"task {t.name!r}: {int(infinite.sum())} labels are infinite (the first at log "
                f"row {int(np.flatnonzero(infinite)[0])}); fix or drop those rows"
            )
        if t.kind == "binary":
            y = labels[t.name]
            bad = ~np.isnan(y) & (y != 0) & (y != 1)
            if bad.any():
                found = np.unique(y[bad])[:5].tolist()
                raise PrepareError(
                    f"task {t.name!r}: column {t.column!r} must be 0/1 for a binary task, found {found} "
                    "(give a threshold to binarise it)"
                )


def _build_sequences(
    raw: RawDataset,
    tmp: Path,
    log: pl.DataFrame,
    frames: dict[str, Frame],
    encoded: dict[str, Encoded],
    codes: dict[str, np.ndarray],
    user: np.ndarray,
    time_ms: np.ndarray,
    split_rows: dict[str, np.ndarray],
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict]:
    """Each behaviour's event table (written) and every row's [start, end) pointers into it."""
    N = len(log)
    pointers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    seq_stats: dict = {}
    (tmp / layout.SEQ_DIR).mkdir()
    rows = np.concatenate(list(split_rows.values()))
    ws = warm_start_events(raw, encoded, frames) if raw.warm_start is not None else None
    for b in raw.behaviours:
        if b.column is not None:
            ev, start, end, figures = prebuilt_blocks(
                b,
                log[f"__behaviour__{b.name}"],
                rows,
                user,
                time_ms,
                raw.max_len,
                lambda keys: item_side_codes(raw, encoded, frames, keys),
            )
            pointers[b.name] = (start, end)
            write_events(ev, raw.side_fields, tmp / layout.SEQ_DIR / f"{b.name}.parquet")
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
        write_events(ev, raw.side_fields, tmp / layout.SEQ_DIR / f"{b.name}.parquet")
        length = np.minimum(end - start, raw.max_len)
        seq_stats[b.name] = {
            "events": len(ev),
            "warm_start_events": n_ws,
            "mean_len": {s: float(length[r].mean()) for s, r in split_rows.items()},
            "empty": {s: float((length[r] == 0).mean()) for s, r in split_rows.items()},
        }
    return pointers, seq_stats


def _write_splits(
    raw: RawDataset,
    tmp: Path,
    split_rows: dict[str, np.ndarray],
    codes: dict[str, np.ndarray],
    user: np.ndarray,
    time_ms: np.ndarray,
    labels: dict[str, np.ndarray],
    oracle: dict[str, np.ndarray],
    pointers: dict[str, tuple[np.ndarray, np.ndarray]],
) -> list[Split]:
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
            pl.DataFrame(cols).write_parquet(
                tmp / s / f"part-{p:05d}.parquet", row_group_size=layout.ROW_GROUP_ROWS
            )
        splits.append(
            Split(
                name=s,
                rows=len(idx),
                time_min=int(time_ms[idx].min()),
                time_max=int(time_ms[idx].max()),
            )
        )
    return splits


def _target_scales(
    raw: RawDataset, labels: dict[str, np.ndarray], train_rows: np.ndarray
) -> dict[str, tuple[float, float]]:
    """(mean, std) of each standardised regression target over its present train labels;
    (0, 1), the raw scale, for the rest. A constant target keeps std 1."""
    scales = {}
    for t in raw.tasks:
        y = labels[t.name][train_rows].astype(np.float64)
        y = y[~np.isnan(y)]
        if t.kind != "regression" or not t.standardise or len(y) == 0:
            scales[t.name] = (0.0, 1.0)
            continue
        std = float(y.std())
        scales[t.name] = (float(y.mean()), std if std > 0 else 1.0)
    return scales


def _schema(
    raw: RawDataset,
    encoded: dict[str, Encoded],
    splits: list[Split],
    scales: dict[str, tuple[float, float]],
) -> Schema:
    return Schema(
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
            Task(
                name=t.name,
                kind=t.kind,
                weight=t.weight,
                transform=t.transform,
                mean=scales[t.name][0],
                std=scales[t.name][1],
            )
            for t in raw.tasks
        ],
        user_key=raw.user_key,
        item_key=raw.item_key,
        time_column=raw.time_column,
        splits=splits,
    )
