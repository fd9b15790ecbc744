"""Batches from a prepared dataset directory (layout.py), all in memory as numpy arrays.

A split is loaded once into
    categorical int32 [N, M], labels float32 [N, T] (NaN = missing), user int64 [N],
    start / end int64 [N, F]  (pointers into the concatenated event table),
and the F behaviours' event tables are concatenated into one int32 [E + 1, K] array whose
last row is all PAD, so a batch's sequences are one vectorised gather:

    pos[b, f, j] = end[b, f] - n + j          j = 0 .. n-1  (most recent last)
    valid        = pos >= start[b, f]          (left padding where the history is short)
    seq_ids      = events[where(valid, pos, E)]                  [B, F, n, K]
    seq_gap      = gap_buckets(time[b], event_time[pos], valid)  [B, F, n]

In a Batch, missing labels are 0 with label_mask False.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from infnet.data import layout
from infnet.data.batch import Batch
from infnet.data.fingerprint import dataset_fingerprint
from infnet.data.schema import Schema
from infnet.data.sequences import gap_buckets


@dataclass
class _Split:
    categorical: np.ndarray  # int32 [N, M]
    labels: np.ndarray  # float32 [N, T], NaN where missing
    user: np.ndarray  # int64 [N]
    time: np.ndarray  # int64 [N]: time_ms of the row
    start: np.ndarray  # int64 [N, F], offsets into the concatenated event table
    end: np.ndarray  # int64 [N, F]


class PreparedDataset:
    """A prepared dataset directory: `.schema`, `.stats`, `.num_rows(split)`, `.batches(...)`,
    `.batch_at(split, indices)`. Splits and event tables are read on first use."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"prepared dataset directory not found: {self.path}")
        self.schema = Schema.load(self.path / layout.SCHEMA)
        self._splits: dict[str, _Split] = {}
        self._events: np.ndarray | None = None
        self._event_time: np.ndarray | None = None  # int64 [E + 1], time_ms of each event
        self._offsets: np.ndarray | None = None  # int64 [F]: first row of each behaviour

    @property
    def stats(self) -> dict:
        path = self.path / layout.STATS
        if not path.is_file():
            raise FileNotFoundError(f"stats file not found: {path}")
        return json.loads(path.read_text())

    def fingerprint(self) -> str:
        """Content hash of schema.json and stats.json: equal data, equal fingerprint."""
        return dataset_fingerprint(self.path)

    def check(self) -> None:
        """Read every split now, so a damaged one stops a run before its first step."""
        for split in layout.SPLITS:
            self._split(split)

    def num_rows(self, split: str) -> int:
        return self.schema.split(self._check_split(split)).rows

    def _check_split(self, split: str) -> str:
        if split not in layout.SPLITS:
            raise KeyError(f"unknown split {split!r} (splits: {list(layout.SPLITS)})")
        return split

    # --- loading ------------------------------------------------------------------------------
    def _load_events(self) -> None:
        seq = self.schema.sequences
        tables, times, offsets, total = [], [], [], 0
        for b in seq.behaviours if seq else []:
            path = self.path / layout.SEQ_DIR / f"{b}.parquet"
            if not path.is_file():
                raise FileNotFoundError(f"behaviour sequence file not found: {path}")
            t = pl.read_parquet(path, columns=[layout.TIME, *seq.side_fields])
            tables.append(t.select(seq.side_fields).to_numpy().astype(np.int32))
            times.append(t[layout.TIME].cast(pl.Int64).to_numpy())
            offsets.append(total)
            total += len(t)
        K = len(seq.side_fields) if seq else 1
        tables.append(np.zeros((1, K), dtype=np.int32))  # the PAD row, index `total`
        times.append(np.zeros(1, dtype=np.int64))
        self._events = np.ascontiguousarray(np.concatenate(tables))
        self._event_time = np.concatenate(times)
        self._offsets = np.asarray(offsets, dtype=np.int64)

    def _split(self, split: str) -> _Split:
        if split in self._splits:
            return self._splits[split]
        self._check_split(split)
        parts = sorted((self.path / split).glob("part-*.parquet"))
        if not parts:
            raise FileNotFoundError(f"no part files in {self.path / split}")
        frames = []
        for part in parts:
            try:
                frames.append(pl.read_parquet(part))
            except Exception as err:  # polars raises several types for a damaged file
                raise ValueError(
                    f"{part}: not a readable part file ({type(err).__name__}: {str(err)[:200]})"
                ) from None
        df = pl.concat(frames)
        s = self.schema
        if len(df) != s.split(split).rows:
            raise ValueError(
                f"{self.path / split}: {len(df)} rows in the part files, {s.split(split).rows} in "
                f"{layout.SCHEMA}; the split was changed after prepare"
            )
        behaviours = s.sequences.behaviours if s.sequences else []
        if self._events is None:
            self._load_events()
        missing = [
            c
            for c in [
                *s.field_names,
                layout.USER,
                layout.TIME,
                *map(layout.label_col, s.task_names),
                *map(layout.seq_start_col, behaviours),
                *map(layout.seq_end_col, behaviours),
            ]
            if c not in df.columns
        ]
        if missing:
            raise ValueError(
                f"{self.path / split}: column {missing[0]!r} is missing from the part files"
            )

        def matrix(cols: list[str], dtype: type) -> np.ndarray:
            if not cols:
                return np.zeros((len(df), 0), dtype=dtype)
            return np.ascontiguousarray(df.select(cols).to_numpy().astype(dtype, copy=False))

        categorical = matrix(s.field_names, np.int32)
        if len(df):
            sizes = np.array([f.vocab_size for f in s.fields])
            bad = (categorical.min(0) < 0) | (categorical.max(0) >= sizes)
            if bad.any():
                f = s.fields[int(np.flatnonzero(bad)[0])]
                raise ValueError(
                    f"{self.path / split}: field {f.name!r} holds codes outside [0, {f.vocab_size})"
                )
        start = matrix(list(map(layout.seq_start_col, behaviours)), np.int64) + self._offsets
        end = matrix(list(map(layout.seq_end_col, behaviours)), np.int64) + self._offsets
        data = _Split(
            categorical=categorical,
            labels=matrix(list(map(layout.label_col, s.task_names)), np.float32),
            user=df[layout.USER].cast(pl.Int64).to_numpy(),
            time=df[layout.TIME].cast(pl.Int64).to_numpy(),
            start=start,
            end=end,
        )
        self._splits[split] = data
        return data

    # --- batches ------------------------------------------------------------------------------
    def batch_at(self, split: str, indices: Sequence[int] | np.ndarray) -> Batch:
        d = self._split(split)
        idx = np.asarray(indices, dtype=np.int64)
        seq = self.schema.sequences
        if seq is None:
            B = len(idx)
            seq_ids = torch.zeros((B, 0, 1, 1), dtype=torch.int64)
            seq_mask = torch.zeros((B, 0, 1), dtype=torch.bool)
            seq_gap = torch.zeros((B, 0, 1), dtype=torch.int64)
        else:
            n = seq.max_len
            start, end = np.take(d.start, idx, axis=0), np.take(d.end, idx, axis=0)  # [B, F]
            pos = end[..., None] + np.arange(-n, 0)  # [B, F, n], most recent last
            valid = pos >= start[..., None]
            pos = np.where(valid, pos, len(self._events) - 1)  # PAD row
            # np.take on axis 0 is several times faster than fancy indexing here
            seq_ids = torch.from_numpy(
                np.take(self._events, pos, axis=0).astype(np.int64)
            )  # [B, F, n, K]
            seq_mask = torch.from_numpy(valid)
            row_time = np.take(d.time, idx)[:, None, None]
            seq_gap = torch.from_numpy(
                gap_buckets(row_time, np.take(self._event_time, pos), valid)
            )  # [B, F, n]
        labels = np.take(d.labels, idx, axis=0)
        missing = np.isnan(labels)
        return Batch(
            categorical=torch.from_numpy(np.take(d.categorical, idx, axis=0).astype(np.int64)),
            seq_ids=seq_ids,
            seq_mask=seq_mask,
            seq_gap=seq_gap,
            labels=torch.from_numpy(np.where(missing, np.float32(0), labels)),
            label_mask=torch.from_numpy(~missing),
            user=torch.from_numpy(np.take(d.user, idx)),
        )

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        """Batches over a split; with shuffle, the order is a permutation seeded by `seed`
        (pass the epoch number, e.g. seed + epoch, for a new order each epoch)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        rows = self.rows(split)
        order = np.random.default_rng(seed).permutation(rows) if shuffle else rows
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for lo in range(0, stop, batch_size):
            yield self.batch_at(split, order[lo : lo + batch_size])

    def times(self, split: str) -> np.ndarray:
        """int64 [N]: each row's time_ms, in the split's (time) order."""
        return self._split(split).time

    def rows(self, split: str) -> np.ndarray:
        """Indices of the split's rows that `batches` goes over: all of them (a subclass
        that evaluates on a slice overrides this and `num_rows`)."""
        return np.arange(len(self._split(split).user))


class RowLimit(PreparedDataset):
    """A prepared dataset whose splits are cut to their last `rows[split]` rows (the most
    recent: splits are in time order). `--quick` runs on such a slice so that a suite of
    many runs takes minutes."""

    def __init__(self, path: str | Path, rows: dict[str, int]) -> None:
        super().__init__(path)
        unknown = set(rows) - {"train", "valid", "test"}
        if unknown:
            raise ValueError(
                f"RowLimit: unknown splits {sorted(unknown)}; splits: train, valid, test"
            )
        self.limits = rows

    def num_rows(self, split: str) -> int:
        return min(super().num_rows(split), self.limits.get(split, 1 << 62))

    def fingerprint(self) -> str:
        return dataset_fingerprint(self.path, self.limits)

    def rows(self, split: str) -> np.ndarray:
        """The most recent `num_rows(split)` rows (splits are stored in time order)."""
        total = super().num_rows(split)
        return np.arange(total - self.num_rows(split), total)
