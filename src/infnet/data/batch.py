"""Batch: what every model reads (DESIGN.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class Batch:
    categorical: torch.Tensor  # int64 [B, M]: item, user, context fields, bucketized numerics
    seq_ids: torch.Tensor  # int64 [B, F, n, K]: most recent last, left-padded with 0
    seq_mask: torch.Tensor  # bool [B, F, n]: True where a position holds an event
    # int64 [B, F, n]: bucketed log time gap from the event to the row (data/sequences.py
    # gap_buckets), 0 where padded
    seq_gap: torch.Tensor
    labels: torch.Tensor  # float32 [B, N_task]
    label_mask: torch.Tensor  # bool [B, N_task]: False where the label is missing
    user: torch.Tensor  # int64 [B]: raw user key, for gAUC

    def __len__(self) -> int:
        return self.categorical.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def per_row_histories(self, seq_index: torch.Tensor | None) -> Batch:
        """The batch with row b holding history seq_index[b] of the U it holds (seq_ids
        [U, F, n, K] -> [B, F, n, K], seq_mask and seq_gap alike); itself when seq_index is None (one history per row)."""
        if seq_index is None:
            return self
        return replace(
            self,
            seq_ids=self.seq_ids.index_select(0, seq_index),
            seq_mask=self.seq_mask.index_select(0, seq_index),
            seq_gap=self.seq_gap.index_select(0, seq_index),
        )
