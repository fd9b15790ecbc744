"""What a source hands to `prepare`: raw frames plus a declarative description of them.

Every dataset source (KuaiRand, the simulator, the YAML table source) builds a
`RawDataset`; `prepare.prepare(raw, out)` turns it into a prepared directory. A source
never encodes, buckets, splits or builds sequences itself: that is prepare's job, so
every dataset gets the same guarantees (point-in-time sequences, time split, PAD/OOV).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import polars as pl


class PrepareError(ValueError):
    """Bad input to prepare: names the frame, column, field or split that is wrong."""


@dataclass(frozen=True)
class FieldSpec:
    """One categorical input field, read from `column` of the joined log."""

    name: str
    group: Literal["item", "user", "context"]
    column: str | None = None  # defaults to name
    kind: Literal["categorical", "quantile", "log"] = "categorical"
    min_count: int = 1  # categorical: values seen fewer times in train map to OOV
    buckets: int = 16  # quantile / log: number of buckets
    # Fields with the same `bag` (adjacent, categorical, one frame) are the slots of one
    # multi-valued feature: one vocabulary fitted over all slots, a missing value is PAD
    # (OOV in the first slot when the row has no value at all); schema field `bag`.
    bag: str | None = None

    @property
    def source(self) -> str:
        return self.column or self.name


@dataclass(frozen=True)
class BehaviourSpec:
    """A behaviour type: either the log rows (of the same user) that count as this
    behaviour (`condition`), or a pre-built history carried by each log row (`column`)."""

    name: str
    condition: pl.Expr | None = None  # boolean over log columns, e.g. pl.col("is_click") == 1
    # Pre-built: a log column of item-id lists, oldest first, each row's history before
    # it (point-in-time is the data's promise). Each row's last max_len ids (default: the
    # dataset's max_len) become its own block of events; side fields are looked up
    # through the item key, so they must be the item key's field or items-table fields.
    column: str | None = None
    max_len: int | None = None

    def __post_init__(self) -> None:
        if (self.condition is None) == (self.column is None):
            raise ValueError(f"behaviour {self.name!r}: give either a condition or a column")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    column: str
    kind: Literal["binary", "regression"] = "binary"
    transform: Literal["none", "log1p"] = "none"
    threshold: float | None = None  # binary from a numeric column: label = column >= threshold
    weight: float = 1.0
    # regression: learn (y - mean) / std with the train split's mean and std (data/schema.py)
    standardise: bool = True


@dataclass(frozen=True)
class SplitSpec:
    """Split by time. Either explicit [start, end) bounds in time_ms per split, or ratios
    of the time-ordered rows (70/15/15 by default, as in the source document)."""

    bounds: dict[str, tuple[int, int]] | None = None
    ratios: tuple[float, float, float] = (0.70, 0.15, 0.15)
    # Bounds on this log column (in its units) instead of the time column, e.g. KuaiRand's
    # official `date` (yyyymmdd), which does not follow one time zone of time_ms exactly.
    column: str | None = None


@dataclass
class RawDataset:
    name: str
    log: pl.DataFrame | pl.LazyFrame  # one row per impression
    fields: list[FieldSpec]
    tasks: list[TaskSpec]
    user_key: str = "user_id"
    item_key: str = "video_id"
    time_column: str = "time_ms"  # int64 milliseconds
    users: pl.DataFrame | None = None  # joined on user_key
    items: pl.DataFrame | None = None  # joined on item_key
    behaviours: list[BehaviourSpec] = field(default_factory=list)
    side_fields: list[str] = field(default_factory=list)  # item field names
    max_len: int = 50
    split: SplitSpec = field(default_factory=SplitSpec)
    # Optional events older than the log, prepended to the users' histories:
    # columns user_key, "behaviour" (a behaviour name), item_key, time_column.
    warm_start: pl.DataFrame | None = None
    # Simulator only: task name -> log column holding the true probability (binary) or
    # expectation (regression) of the label; prepare keeps them as __oracle__<task> and
    # reports each split's oracle AUC in stats.json.
    oracle: dict[str, str] = field(default_factory=dict)
    # Figures the source already knows (duplicates removed, ids that do not join,
    # oracle AUCs of the simulator); written into stats.json.
    stats: dict = field(default_factory=dict)
