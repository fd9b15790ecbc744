"""A split streamed from its Parquet part files in a bounded memory budget: the loader for
data that does not fit in memory, and for a process that must read only its shard.

The unit is a Parquet row group (prepare writes them of `layout.ROW_GROUP_ROWS` rows). An epoch
1. orders the split's row groups by a permutation seeded by the epoch's seed;
2. deals them to the ranks of the world, each to the rank with the fewest rows so far, so
   shards are disjoint and differ by at most one row group;
3. reads this rank's row groups a window at a time (as many as the budget holds), shuffles
   each window's rows, and cuts batches from it; the rows a window leaves over go first
   into the next batch.
Every rank cuts its shard into the same number of batches, ceil(N / batch_size), as evenly
as its rows allow, so every process takes the same number of optimiser steps and every row
is read exactly once an epoch.

The budget holds the behaviours' event tables (kept whole, as in loader.py, since any row
may point anywhere in them), three copies of a window (the window and its shuffled copy,
and the allocators' slack: measured, benchmarks/distributed.py), the decoding of one row
group and one batch.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from infnet.data import layout
from infnet.data.batch import Batch
from infnet.data.rows import DatasetDirectory, Rows, Shard, assemble, part_columns

DECODE_FACTOR = 4  # bytes a row group takes while decoded and converted, per byte it ends as
WINDOW_COPIES = 3


@dataclass(frozen=True)
class Unit:
    part: Path
    group: int  # row group index in the part file
    rows: int
    first: int  # the unit's first row in the split's stored order


class PartsDataset(DatasetDirectory):
    """A prepared dataset read row group by row group: `.batches(...)` and
    `.batch_range(...)` like PreparedDataset's, in `memory_budget_mb` of memory."""

    def __init__(self, path: str | Path, memory_budget_mb: float = 1024) -> None:
        super().__init__(path)
        if memory_budget_mb <= 0:
            raise ValueError(f"memory_budget_mb must be positive, got {memory_budget_mb}")
        self.budget = int(memory_budget_mb * 2**20)
        self._units: dict[str, list[Unit]] = {}
        self._cached: tuple[Unit, Rows] | None = None  # batch_range's last row group

    # --- the split's row groups ------------------------------------------------------------------
    def units(self, split: str) -> list[Unit]:
        if split in self._units:
            return self._units[split]
        columns, units, first = part_columns(self.schema), [], 0
        for part in self._parts(split):
            try:
                meta = pq.ParquetFile(part).metadata
            except Exception as err:  # pyarrow raises several types for a damaged footer
                raise ValueError(
                    f"{part}: not a readable part file ({type(err).__name__}: {str(err)[:200]})"
                ) from None
            missing = [c for c in columns if c not in meta.schema.names]
            if missing:
                raise ValueError(f"{part}: column {missing[0]!r} is missing from the part files")
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                units.append(Unit(part, g, n, first))
                first += n
        if first != self.schema.split(split).rows:
            raise ValueError(
                f"{self.path / split}: {first} rows in the part files, "
                f"{self.schema.split(split).rows} in {layout.SCHEMA}; the split was changed after prepare"
            )
        self._units[split] = units
        return units

    def check(self) -> None:
        """Every split's part files readable, with the right columns and row counts, and the
        window that the budget holds at least one row group; codes are checked as read."""
        for split in layout.SPLITS:
            self._window_rows(split)

    def _read(self, unit: Unit) -> Rows:
        try:
            table = pq.ParquetFile(unit.part).read_row_group(
                unit.group, columns=part_columns(self.schema)
            )
        except Exception as err:
            raise ValueError(
                f"{unit.part}: row group {unit.group} is not readable "
                f"({type(err).__name__}: {str(err)[:200]})"
            ) from None
        return self.rows_of(pl.from_arrow(table), f"{unit.part} (row group {unit.group})")

    def _row_bytes(self) -> int:
        s = self.schema
        F = len(s.sequences.behaviours) if s.sequences else 0
        return 4 * len(s.fields) + 4 * s.num_tasks + 16 + 16 * F

    def _window_rows(self, split: str, batch_size: int = 0) -> int:
        """Rows of a window: what the budget holds after the event tables, one row group's
        decoding and one batch, over three copies of the window."""
        units, row = self.units(split), self._row_bytes()
        largest = max((u.rows for u in units), default=0)
        seq = self.schema.sequences
        batch_row = 8 * (
            len(self.schema.fields)
            + (seq.max_len * len(seq.behaviours) * (len(seq.side_fields) + 2) if seq else 0)
        )
        fixed = self.events.nbytes + DECODE_FACTOR * largest * row + batch_size * batch_row
        window = (self.budget - fixed) // (WINDOW_COPIES * row)
        if window < largest:
            need = math.ceil((fixed + WINDOW_COPIES * largest * row) / 2**20)
            raise ValueError(
                f"{self.path / split}: a memory budget of {self.budget / 2**20:.0f} MB does not "
                f"hold one row group of {largest:,} rows beside the event tables "
                f"({self.events.nbytes / 2**20:.0f} MB); give train.memory_budget_mb >= {need}"
            )
        return int(window)

    # --- batches ----------------------------------------------------------------------------------
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
        """Batches over a split; with shuffle, row groups and rows in an order seeded by
        `seed`; with a `shard`, this rank's own row groups cut into ceil(N / batch_size)
        batches, the same count on every rank."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        units = self.units(split)
        rng = np.random.default_rng(seed)
        order = [units[i] for i in rng.permutation(len(units))] if shuffle else list(units)
        total = sum(u.rows for u in units)
        if shard is None:
            mine = order
            stop = total - total % batch_size if drop_last else total
            sizes = [min(batch_size, stop - lo) for lo in range(0, stop, batch_size)]
        else:
            if drop_last:
                raise ValueError("PartsDataset.batches: drop_last with a shard is not supported")
            mine = deal(order, shard.world_size)[shard.rank]
            rows = sum(u.rows for u in mine)
            steps = math.ceil(total / batch_size)
            if rows < steps:
                raise ValueError(
                    f"{self.path / split}: rank {shard.rank} of {shard.world_size} has "
                    f"{rows} rows ({len(mine)} row groups) for {steps} steps; use fewer "
                    f"processes (the split has {len(units)} row groups)"
                )
            q, r = divmod(rows, steps)
            sizes = [q + 1] * r + [q] * (steps - r)
        yield from self._cut(
            mine, sizes, self._window_rows(split, batch_size), rng if shuffle else None
        )

    def _cut(
        self, units: list[Unit], sizes: list[int], window: int, rng: np.random.Generator | None
    ) -> Iterator[Batch]:
        buffer: Rows | None = None  # rows read; those from `used` on are not yet batched
        used, at = 0, 0  # rows of the buffer batched, next unit to read
        for size in sizes:
            if buffer is None or len(buffer) - used < size:
                # keep only the rows not yet batched, so that two windows are never held
                left = None if buffer is None else buffer.take(np.arange(used, len(buffer)))
                buffer = None
                while (left is None or len(left) < size) and at < len(units):
                    group, rows = [], 0
                    while at < len(units) and (not group or rows + units[at].rows <= window):
                        group.append(self._read(units[at]))
                        rows += units[at].rows
                        at += 1
                    fresh = Rows.concat(group)
                    del group
                    pa.default_memory_pool().release_unused()  # Arrow keeps freed pages
                    if rng is not None:
                        fresh = fresh.take(rng.permutation(len(fresh)))
                    left = fresh if left is None else Rows.concat([left, fresh])
                    del fresh
                buffer, used = left, 0
            assert buffer is not None and len(buffer) - used >= size, "sizes exceed the rows"
            yield assemble(buffer, self.events, self.schema, np.arange(used, used + size))
            used += size

    def batch_range(self, split: str, lo: int, hi: int) -> Batch:
        """Rows [lo, hi) of the split in stored order (a sharded evaluation's unit)."""
        pieces = []
        for u in self.units(split):
            if u.first + u.rows <= lo or u.first >= hi:
                continue
            if self._cached is None or self._cached[0] != u:
                self._cached = (u, self._read(u))
            rows = self._cached[1]
            pieces.append(
                rows.take(
                    np.arange(max(lo, u.first) - u.first, min(hi, u.first + u.rows) - u.first)
                )
            )
        return assemble(Rows.concat(pieces), self.events, self.schema)


def deal(units: list[Unit], world_size: int) -> list[list[Unit]]:
    """Each unit in turn to the rank holding the fewest rows (the lowest rank on a tie)."""
    shards: list[list[Unit]] = [[] for _ in range(world_size)]
    heap = [(0, r) for r in range(world_size)]
    for u in units:
        rows, r = heapq.heappop(heap)
        shards[r].append(u)
        heapq.heappush(heap, (rows + u.rows, r))
    return shards
