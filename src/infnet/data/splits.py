"""Splitting the log into train / valid / test: by time bounds, by a split column, or by
ratios of the time-ordered rows (cut at times, so rows of equal time stay in one split)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl

from infnet.data import layout
from infnet.data.spec import PrepareError, RawDataset


def fmt_time(t: int) -> str:
    return datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def split_ids(raw: RawDataset, log: pl.DataFrame, time_ms: np.ndarray) -> np.ndarray:
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
            present += f" ({fmt_time(values.min())} .. {fmt_time(values.max())})"
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
        present = f"{raw.time_column} {ts[0]} .. {ts[-1]} ({fmt_time(ts[0])} .. {fmt_time(ts[-1])})"
        where = {
            s: f"ratio {x:g} of the time-ordered rows"
            for s, x in zip(layout.SPLITS, r, strict=True)
        }
    counts = np.bincount(sid + 1, minlength=4)[1:]
    for name, c in zip(layout.SPLITS, counts, strict=True):
        if c == 0:
            raise PrepareError(f"split {name!r} ({where[name]}) is empty; the log holds {present}")
    return sid
