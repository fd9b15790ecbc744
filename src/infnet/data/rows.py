"""What both loaders share: the dataset directory (schema, stats, the behaviours' event
tables), a frame of split rows as arrays, and those arrays as a Batch.

Rows are held as
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from infnet.data import layout
from infnet.data.batch import Batch
from infnet.data.fingerprint import dataset_fingerprint
from infnet.data.schema import Schema
from infnet.data.sequences import gap_buckets


@dataclass
class Rows:
    categorical: np.ndarray  # int32 [N, M]
    labels: np.ndarray  # float32 [N, T], NaN where missing
    user: np.ndarray  # int64 [N]
    time: np.ndarray  # int64 [N]: time_ms of the row
    start: np.ndarray  # int64 [N, F], offsets into the concatenated event table
    end: np.ndarray  # int64 [N, F]

    def __len__(self) -> int:
        return len(self.user)

    def take(self, idx: np.ndarray) -> Rows:
        return Rows(*(np.take(a, idx, axis=0) for a in self._arrays()))

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.categorical, self.labels, self.user, self.time, self.start, self.end)

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        return Rows(
            *(np.concatenate(col) for col in zip(*(p._arrays() for p in parts), strict=True))
        )


@dataclass
class Events:
    table: np.ndarray  # int32 [E + 1, K]: every behaviour's events, then the PAD row
    time: np.ndarray  # int64 [E + 1]: time_ms of each event
    offsets: np.ndarray  # int64 [F]: first row of each behaviour

    @property
    def nbytes(self) -> int:
        return self.table.nbytes + self.time.nbytes


class DatasetDirectory:
    """A prepared dataset directory: `.schema`, `.stats`, `.num_rows(split)`,
    `.fingerprint()`; the event tables are read on first use."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"prepared dataset directory not found: {self.path}")
        self.schema = Schema.load(self.path / layout.SCHEMA)
        self._events: Events | None = None

    @property
    def stats(self) -> dict:
        path = self.path / layout.STATS
        if not path.is_file():
            raise FileNotFoundError(f"stats file not found: {path}")
        return json.loads(path.read_text())

    def fingerprint(self) -> str:
        """Content hash of schema.json and stats.json: equal data, equal fingerprint."""
        return dataset_fingerprint(self.path)

    def num_rows(self, split: str) -> int:
        return self.schema.split(self._check_split(split)).rows

    def _check_split(self, split: str) -> str:
        if split not in layout.SPLITS:
            raise KeyError(f"unknown split {split!r} (splits: {list(layout.SPLITS)})")
        return split

    def _parts(self, split: str) -> list[Path]:
        parts = sorted((self.path / self._check_split(split)).glob("part-*.parquet"))
        if not parts:
            raise FileNotFoundError(f"no part files in {self.path / split}")
        return parts

    @property
    def events(self) -> Events:
        if self._events is None:
            self._events = read_events(self.path, self.schema)
        return self._events

    def rows_of(self, df: pl.DataFrame, where: str) -> Rows:
        """A frame of split rows as arrays, its codes checked against the vocabularies;
        `where` (a file or a directory) names it in errors."""
        return frame_rows(df, self.schema, self.events.offsets, where)


@dataclass(frozen=True)
class Shard:
    """One process's part of the data: rank `rank` of `world_size` (training/distributed.py)."""

    rank: int
    world_size: int


def part_columns(s: Schema) -> list[str]:
    """The part-file columns a loader reads."""
    behaviours = s.sequences.behaviours if s.sequences else []
    return [
        *s.field_names,
        layout.USER,
        layout.TIME,
        *map(layout.label_col, s.task_names),
        *map(layout.seq_start_col, behaviours),
        *map(layout.seq_end_col, behaviours),
    ]


def read_events(path: Path, schema: Schema) -> Events:
    seq = schema.sequences
    files = []
    for b in seq.behaviours if seq else []:
        file = path / layout.SEQ_DIR / f"{b}.parquet"
        if not file.is_file():
            raise FileNotFoundError(f"behaviour sequence file not found: {file}")
        files.append(file)
    sides = seq.side_fields if seq else []
    sizes = [pq.ParquetFile(f).metadata.num_rows for f in files]
    total = sum(sizes)
    # filled one column at a time: the tables can be the largest thing a loader holds
    table = np.zeros((total + 1, max(len(sides), 1)), dtype=np.int32)  # last row: PAD
    time = np.zeros(total + 1, dtype=np.int64)
    at = 0
    for file, n in zip(files, sizes, strict=True):
        t = pq.read_table(file, columns=[layout.TIME, *sides])
        for k, side in enumerate(sides):
            table[at : at + n, k] = t.column(side).to_numpy()
        time[at : at + n] = t.column(layout.TIME).to_numpy()
        at += n
        del t
    pa.default_memory_pool().release_unused()  # Arrow keeps the pages it read into
    return Events(
        table=table, time=time, offsets=np.cumsum([0, *sizes[:-1]], dtype=np.int64)[: len(files)]
    )


def frame_rows(df: pl.DataFrame, s: Schema, offsets: np.ndarray, where: str) -> Rows:
    behaviours = s.sequences.behaviours if s.sequences else []
    missing = [c for c in part_columns(s) if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: column {missing[0]!r} is missing from the part files")

    def matrix(cols: list[str], dtype: type) -> np.ndarray:
        out = np.empty((len(df), len(cols)), dtype=dtype)
        for j, c in enumerate(cols):  # a column at a time: no [N, M] temporary of another dtype
            out[:, j] = df[c].to_numpy()
        return out

    categorical = matrix(s.field_names, np.int32)
    if len(df):
        sizes = np.array([f.vocab_size for f in s.fields])
        bad = (categorical.min(0) < 0) | (categorical.max(0) >= sizes)
        if bad.any():
            f = s.fields[int(np.flatnonzero(bad)[0])]
            raise ValueError(f"{where}: field {f.name!r} holds codes outside [0, {f.vocab_size})")
    return Rows(
        categorical=categorical,
        labels=matrix(list(map(layout.label_col, s.task_names)), np.float32),
        user=df[layout.USER].cast(pl.Int64).to_numpy(),
        time=df[layout.TIME].cast(pl.Int64).to_numpy(),
        start=matrix(list(map(layout.seq_start_col, behaviours)), np.int64) + offsets,
        end=matrix(list(map(layout.seq_end_col, behaviours)), np.int64) + offsets,
    )


def assemble(d: Rows, events: Events, schema: Schema, idx: np.ndarray | None = None) -> Batch:
    """The Batch of rows `idx` of `d` (all of them when None), histories gathered."""
    if idx is None:
        idx = np.arange(len(d))
    seq = schema.sequences
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
        pos = np.where(valid, pos, len(events.table) - 1)  # PAD row
        # np.take on axis 0 is several times faster than fancy indexing here
        seq_ids = torch.from_numpy(np.take(events.table, pos, axis=0).astype(np.int64))
        seq_mask = torch.from_numpy(valid)
        row_time = np.take(d.time, idx)[:, None, None]
        seq_gap = torch.from_numpy(gap_buckets(row_time, np.take(events.time, pos), valid))
    labels = np.take(d.labels, idx, axis=0)
    missing = np.isnan(labels)
    return Batch(
        categorical=torch.from_numpy(np.take(d.categorical, idx, axis=0).astype(np.int64)),
        seq_ids=seq_ids,  # [B, F, n, K]
        seq_mask=seq_mask,  # [B, F, n]
        seq_gap=seq_gap,  # [B, F, n]
        labels=torch.from_numpy(np.where(missing, np.float32(0), labels)),
        label_mask=torch.from_numpy(~missing),
        user=torch.from_numpy(np.take(d.user, idx)),
    )
