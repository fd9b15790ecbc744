"""The record of one served request, as the server writes it and the request log (and
streaming training after it) reads it back: the request, who served it, what it answered,
and the exact model inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ServedRequest:
    request_id: str
    ts_ms: int  # the request's event time
    served_ms: int  # wall clock when it was answered
    user_id: str
    model_version: str
    arm: str
    feature_version: str
    context: dict[str, Any]
    bid: float | list[float] | None
    candidates: list[int | str]
    unknown_user: bool
    item_known: np.ndarray  # bool [K]
    scores: dict[str, np.ndarray]  # task -> [K], in candidate order
    ranking: np.ndarray  # [K]: the ranking score of each candidate
    categorical: np.ndarray  # int64 [K, M]: the model's field order
    seq_ids: np.ndarray  # int64 [F, n, K_side]: the history the K candidates share
    seq_mask: np.ndarray  # bool [F, n]
    seq_gap: np.ndarray  # int64 [F, n]: time-gap buckets of the history at ts_ms
    shown: int | None = None  # the client displays the top `shown` (None: all)
