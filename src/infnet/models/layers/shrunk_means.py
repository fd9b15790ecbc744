"""Shrunk label means per code of one field: the statistic of the reference models.

For code v and task t, with S[v, t] the sum and N[v, t] the count of the train split's
present labels (after the task's transform) and p_t the global mean,

    mean[v, t] = (S[v, t] + m p_t) / (N[v, t] + m)        (m pseudo-rows of the global mean)

read in the task's link space: logit for a binary task, the standardised z = (y - mean_t)
/ std_t (the schema's scale) for a regression task. The counts are buffers: they are
saved with the weights and exported as constants of the ONNX graph. In training mode a
row's own label is left out of its statistic (S - y, N - 1), so what a learned
calibration on top sees during training is what an unseen row sees at evaluation.
"""

from __future__ import annotations

import torch
from torch import nn

from infnet.data.schema import Schema, Task

EPS = 1e-6  # rates are clipped to [EPS, 1 - EPS] before the logit


class ShrunkMeans(nn.Module):
    def __init__(self, vocab_size: int, tasks: list[Task], strength: float) -> None:
        super().__init__()
        T = len(tasks)
        self.strength = strength
        self.register_buffer("sum", torch.zeros(vocab_size, T))  # S [V, T]
        self.register_buffer("count", torch.zeros(vocab_size, T))  # N [V, T]
        self.register_buffer("binary", torch.tensor([t.kind == "binary" for t in tasks]))
        self.register_buffer("mean", torch.tensor([t.mean for t in tasks]))
        self.register_buffer("std", torch.tensor([t.std for t in tasks]))

    @torch.no_grad()
    def observe(self, codes: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> None:
        """Add rows: codes int64 [B], labels float [B, T] (after transform), mask bool [B, T]."""
        present = mask.to(self.sum.dtype)
        self.sum.index_add_(0, codes, labels.to(self.sum.dtype) * present)
        self.count.index_add_(0, codes, present)

    def prior(self) -> torch.Tensor:
        """p_t [T]: the global mean of each task's train labels (0 before any row)."""
        return self.sum.sum(0) / self.count.sum(0).clamp_min(1.0)

    def link(self, mean: torch.Tensor) -> torch.Tensor:
        rate = mean.clamp(EPS, 1 - EPS)
        return torch.where(
            self.binary, torch.log(rate) - torch.log1p(-rate), (mean - self.mean) / self.std
        )

    def forward(
        self,
        codes: torch.Tensor,  # int64 [B]
        own: tuple[torch.Tensor, torch.Tensor] | None = None,  # (labels, mask) to leave out
    ) -> torch.Tensor:  # [B, T]: link(mean[code]) - link(p)
        s, n = self.sum[codes], self.count[codes]
        if own is not None:
            labels, mask = own
            present = mask.to(s.dtype)
            s, n = s - labels.to(s.dtype) * present, n - present
        p = self.prior()
        mean = (s + self.strength * p) / (n + self.strength).clamp_min(EPS)
        return self.link(mean) - self.link(p)


def key_column(schema: Schema, key: str, model: str) -> int:
    """The column of Batch.categorical that holds the user or item key."""
    if key not in schema.field_names:
        raise ValueError(
            f"model {model!r} needs the key {key!r} as a field of the schema (fields: {schema.field_names})"
        )
    return schema.field_index(key)
