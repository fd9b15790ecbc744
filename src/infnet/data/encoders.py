"""Vocabulary and bucket encoding: fitted on the train split by prepare, applied offline by
prepare and online by the server (serving/features.py), so both encode a value the same way.

- A categorical value seen at least `min_count` times in train gets an index 2, 3, ...
  (most frequent first, ties by value); PAD = 0, OOV = 1. Unseen, rare and null values
  all map to OOV: "unknown" is one token, and PAD stays "no token".
- A numeric value maps to 2 + searchsorted(boundaries, v, "right"); null / NaN / inf to
  OOV. quantile: the train rows' k/B quantiles (duplicates dropped, so skewed columns get
  fewer buckets); log: B buckets evenly spaced in log1p between the train min and max.
- Online, a value is looked up by the string form polars gives the raw column (1 -> "1",
  a float that is an integer -> its integer form, booleans -> "true" / "false").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from infnet.data.schema import OOV, PAD, CategoricalField
from infnet.data.spec import FieldSpec, PrepareError


def bucket_codes(boundaries: np.ndarray, values: np.ndarray) -> np.ndarray:
    """int32 codes of float values: 2 + searchsorted(boundaries, v, "right"), OOV where not finite."""
    ok = np.isfinite(values)
    return np.where(
        ok, 2 + np.searchsorted(boundaries, np.where(ok, values, 0.0), side="right"), OOV
    ).astype(np.int32)


class FieldEncoder:
    """One field's encoding of single raw values (a request's context), from its schema
    entry and its vocabulary file: the online side of this module."""

    def __init__(self, field: CategoricalField, vocab_dir: Path) -> None:
        self.field = field
        self.boundaries = np.asarray(field.boundaries) if field.boundaries is not None else None
        self.vocab: dict[str, int] = {}
        if self.boundaries is None:
            v = pl.read_parquet(vocab_dir / f"{field.name}.parquet")
            self.vocab = dict(zip(v["value"].to_list(), v["index"].to_list(), strict=True))

    def encode(self, value: object) -> int:
        if self.boundaries is not None:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                return OOV
            return int(bucket_codes(self.boundaries, np.array([float(value)]))[0])
        if isinstance(value, bool):
            key = "true" if value else "false"
        elif isinstance(value, float) and value.is_integer() and str(value) not in self.vocab:
            key = str(int(value))
        else:
            key = str(value)
        return self.vocab.get(key, OOV)


@dataclass
class Encoded:
    codes: np.ndarray  # int32 [entities]
    vocab: pl.DataFrame  # value (str), index (int32), count (int64)
    field: CategoricalField
    values: pl.Series | None = None  # categorical: the vocabulary in the column's dtype


def fit_categorical(f: FieldSpec, values: pl.Series, weight: np.ndarray) -> Encoded:
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


def fit_bag(
    bag: list[FieldSpec], values: list[pl.Series], weight: np.ndarray
) -> list[tuple[FieldSpec, Encoded, int]]:
    """The K slots of a bag: one vocabulary fitted over all slots' values; a missing value is
    PAD, and an entity without any value gets OOV in its first slot ("unknown" is one token).
    Returns (field, encoding over entities, code of a row whose entity does not join)."""
    first = bag[0]
    joint = fit_categorical(
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


def fit_boundaries(f: FieldSpec, v: np.ndarray, w: np.ndarray) -> np.ndarray:
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


def fit_buckets(f: FieldSpec, values: pl.Series, weight: np.ndarray) -> Encoded:
    if not values.dtype.is_numeric():
        raise PrepareError(
            f"field {f.name!r} ({f.kind}): column {f.source!r} is {values.dtype}, not numeric"
        )
    v = values.cast(pl.Float64).fill_null(np.nan).to_numpy()
    ok = np.isfinite(v)
    fit = ok & (weight > 0)
    b = fit_boundaries(f, v[fit], weight[fit].astype(np.float64))
    codes = bucket_codes(b, v)
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


def fit_field(f: FieldSpec, values: pl.Series, weight: np.ndarray) -> Encoded:
    return (
        fit_categorical(f, values, weight)
        if f.kind == "categorical"
        else fit_buckets(f, values, weight)
    )
