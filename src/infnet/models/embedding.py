"""Shared embedding of categorical fields and sequence tokens.

One table per categorical field. A sequence position's side-info field (video id,
author id, tag) is looked up in the table of the target item's field of the same name,
so a clicked video and the candidate video live in one space.
"""

from __future__ import annotations

import torch
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import PAD, Schema
from infnet.models.layers import masked_mean


class FeatureEmbedding(nn.Module):
    def __init__(self, schema: Schema, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.tables = nn.ModuleList(
            nn.Embedding(f.vocab_size, dim, padding_idx=PAD) for f in schema.fields
        )
        for table in self.tables:
            nn.init.normal_(table.weight, std=0.01)
            with torch.no_grad():
                table.weight[PAD].zero_()
        self.side_field_index = (
            [schema.field_index(name) for name in schema.sequences.side_fields]
            if schema.sequences is not None
            else []
        )

    def categorical(self, batch: Batch) -> torch.Tensor:  # [B, M, d]
        return torch.stack([t(batch.categorical[:, i]) for i, t in enumerate(self.tables)], dim=1)

    def sequence(self, batch: Batch) -> torch.Tensor:  # [B, F, n, K, d]
        return torch.stack(
            [self.tables[i](batch.seq_ids[..., k]) for k, i in enumerate(self.side_field_index)],
            dim=-2,
        )

    def pooled_sequence(self, batch: Batch) -> torch.Tensor:  # [B, F, K * d]
        """Masked mean over positions of each behaviour's side-info embeddings: how models
        without sequence modelling of their own read the histories (FuxiCTR does the same)."""
        s = self.sequence(batch).flatten(-2)  # [B, F, n, K*d]
        return masked_mean(s, batch.seq_mask, dim=2)

    def flat_input(self, batch: Batch) -> torch.Tensor:  # [B, M*d + F*K*d]
        """Field embeddings and pooled histories, concatenated: the input of MLP-style models."""
        parts = [self.categorical(batch).flatten(1)]
        if batch.seq_ids.shape[1]:
            parts.append(self.pooled_sequence(batch).flatten(1))
        return torch.cat(parts, dim=1)

    def flat_dim(self, schema: Schema) -> int:
        seq = schema.num_behaviours * len(schema.sequences.side_fields) if schema.sequences else 0
        return (schema.num_fields + seq) * self.dim

    def l2(self) -> torch.Tensor:
        """Squared norm of all embedding rows (the trainer's embedding regulariser)."""
        return sum(t.weight.pow(2).sum() for t in self.tables)
