"""Batches from a prepared dataset directory (layout.py), every split in memory as numpy
arrays (rows.py): the fast default for data that fits. parts.py streams a split from its
part files instead, in a bounded memory budget."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from infnet.data import layout
from infnet.data.batch import Batch
from infnet.data.fingerprint import dataset_fingerprint
from infnet.data.rows import DatasetDirectory, Rows, Shard, assemble


class PreparedDataset(DatasetDirectory):
    """A prepared dataset directory: `.schema`, `.stats`, `.num_rows(split)`, `.batches(...)`,
    `.batch_at(split, indices)`. Splits and event tables are read on first use."""

    def __init__(self, path: str | Path):
        super().__init__(path)
        self._splits: dict[str, Rows] = {}

    def check(self) -> None:
        """Read every split now, so a damaged one stops a run before its first step."""
        for split in layout.SPLITS:
            self._split(split)

    def _split(self, split: str) -> Rows:
        if split in self._splits:
            return self._splits[split]
        frames = []
        for part in self._parts(split):
            try:
                frames.append(pl.read_parquet(part))
            except Exception as err:  # polars raises several types for a damaged file
                raise ValueError(
                    f"{part}: not a readable part file ({type(err).__name__}: {str(err)[:200]})"
                ) from None
        df = pl.concat(frames)
        if len(df) != self.schema.split(split).rows:
            raise ValueError(
                f"{self.path / split}: {len(df)} rows in the part files, "
                f"{self.schema.split(split).rows} in {layout.SCHEMA}; the split was changed after prepare"
            )
        self._splits[split] = self.rows_of(df, str(self.path / split))
        return self._splits[split]

    # --- batches ------------------------------------------------------------------------------
    def batch_at(self, split: str, indices: Sequence[int] | np.ndarray) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)
        return assemble(self._split(split), self.events, self.schema, idx)

    def batch_range(self, split: str, lo: int, hi: int) -> Batch:
        """Rows [lo, hi) of what `batches` goes over, in order (a sharded evaluation's unit)."""
        return self.batch_at(split, self.rows(split)[lo:hi])

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        shard: Shard | None = None,
    ) -> Iterator[Batch]:
        """Batches over a split; with shuffle, the order is a permutation seeded by `seed`
        (pass the epoch number, e.g. seed + epoch, for a new order each epoch). With a
        `shard`, each batch is this rank's part of the global batch of `batch_size` rows:
        the same global batches for any number of processes, split as evenly as rows allow."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        rows = self.rows(split)
        order = np.random.default_rng(seed).permutation(rows) if shuffle else rows
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for lo in range(0, stop, batch_size):
            chunk = order[lo : lo + batch_size]
            if shard is not None:
                chunk = np.array_split(chunk, shard.world_size)[shard.rank]
            yield self.batch_at(split, chunk)

    def times(self, split: str) -> np.ndarray:
        """int64 [N]: each row's time_ms, in the split's (time) order."""
        return self._split(split).time

    def rows(self, split: str) -> np.ndarray:
        """Indices of the split's rows that `batches` goes over: all of them (a subclass
        that evaluates on a slice overrides this and `num_rows`)."""
        return np.arange(len(self._split(split)))


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
