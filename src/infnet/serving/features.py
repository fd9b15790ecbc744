"""A request's model inputs: the store's user and item codes, the encoded context, the history.

Context fields are encoded by data/encoders.py, the module prepare encodes with: a
categorical value through its vocabulary (the string form polars gives the raw column:
1 -> "1"), unseen -> OOV; a bucketized value as 2 + searchsorted(boundaries, v, "right").
A context field the request
does not give is derived from its timestamp when it is one the sources derive (hour of
day, day of week, both in the sources' local time, UTC+8 for KuaiRand and the simulator).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infnet.data.encoders import FieldEncoder
from infnet.data.schema import Schema, schema_differences
from infnet.data.sequences import gap_buckets
from infnet.serving.requests import RequestError
from infnet.serving.stores import Lookup, StoreMeta

HOUR_MS, DAY_MS = 3_600_000, 86_400_000
# field -> raw value from (time_ms, utc offset ms); as sources/kuairand.py and synthetic.py
FROM_TIMESTAMP: dict[str, Callable[[int, int], int]] = {
    "hour": lambda t, offset: (t + offset) // HOUR_MS % 24,
    # ISO day of week, Monday 1 .. Sunday 7 (polars dt.weekday); 1970-01-01 was a Thursday
    "weekday": lambda t, offset: ((t + offset) // DAY_MS + 3) % 7 + 1,
}


def compatibility(
    model_schema: Schema, model_vocab: str, meta: StoreMeta, time_aware: bool = False
) -> list[str]:
    """Why a model cannot score the store's features (empty when it can)."""
    problems = schema_differences(meta.dataset_schema(), model_schema)
    if time_aware and model_schema.sequences is not None and not meta.history_times:
        problems.append(
            f"the model reads the histories' time gaps, and the feature store (loaded from "
            f"{meta.source}) holds no event times; reload it with this version of infnet"
        )
    if model_vocab != meta.vocab_fingerprint:
        problems.append(
            f"vocabularies differ (model {model_vocab}, feature store {meta.vocab_fingerprint} loaded "
            f"from {meta.source}); load the features of the model's prepared dataset"
        )
    return problems


@dataclass
class Inputs:
    """One request's rows: K candidates sharing the user, the context and the history."""

    categorical: np.ndarray  # int64 [K, M]
    seq_ids: np.ndarray  # int64 [F, n, K_side]
    seq_mask: np.ndarray  # bool [F, n]
    seq_gap: np.ndarray  # int64 [F, n]: time-gap buckets of the events at the request's time

    def __len__(self) -> int:
        return len(self.categorical)


class Assembler:
    """Places the store's and the request's codes in the model's field order."""

    def __init__(self, schema: Schema, vocab_dir: Path, utc_offset_hours: float) -> None:
        # The store keeps user and item fields in schema order (stores/base.py), and
        # compatibility() has checked that its schema is the model's.
        self.schema = schema
        self.item_pos, self.user_pos, self.context_pos = (
            np.array([i for i, f in enumerate(schema.fields) if f.group == g], dtype=np.int64)
            for g in ("item", "user", "context")
        )
        context = [f for f in schema.fields if f.group == "context"]
        self.encoders = [FieldEncoder(f, vocab_dir) for f in context]
        self.offset_ms = int(round(utc_offset_hours * HOUR_MS))

    @property
    def context_fields(self) -> list[str]:
        return [e.field.name for e in self.encoders]

    def encode_context(self, context: dict, timestamp: int) -> np.ndarray:
        """int64 [C] codes of the context fields; RequestError for a field it cannot fill."""
        for key in context:
            if key not in self.context_fields:
                raise RequestError(
                    f"context.{key}",
                    f"unknown; the model reads context fields {self.context_fields} and timestamp",
                )
        codes = np.empty(len(self.encoders), np.int64)
        for i, enc in enumerate(self.encoders):
            name = enc.field.name
            if name in context:
                value = context[name]
                if not isinstance(value, int | float | str):
                    raise RequestError(
                        f"context.{name}",
                        f"must be a number or a string, got {type(value).__name__}",
                    )
            elif name in FROM_TIMESTAMP:
                value = FROM_TIMESTAMP[name](timestamp, self.offset_ms)
            else:
                raise RequestError(
                    f"context.{name}",
                    f"missing; the model reads context fields {self.context_fields}",
                )
            codes[i] = enc.encode(value)
        return codes

    def build(self, lookup: Lookup, context_codes: np.ndarray, timestamp: int) -> Inputs:
        K = len(lookup.item_codes)
        categorical = np.empty((K, self.schema.num_fields), np.int64)
        categorical[:, self.item_pos] = lookup.item_codes
        categorical[:, self.user_pos] = lookup.user_codes
        categorical[:, self.context_pos] = context_codes
        # as the loader computes them; a store without event times gives 0 (unknown), which
        # only models that do not read gaps are served from (compatibility())
        if lookup.history_time is None:
            gap = np.zeros(lookup.history_mask.shape, np.int64)
        else:
            gap = gap_buckets(np.int64(timestamp), lookup.history_time, lookup.history_mask)
        return Inputs(categorical, lookup.history, lookup.history_mask, gap)
