"""The first-order (logistic regression) term: LR, and FM's linear part."""

from __future__ import annotations

import torch
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import PAD, Schema
from infnet.models.embedding import lookup_tokens, token_tables, tokens
from infnet.models.layers.pooling import masked_mean


class LinearTerm(nn.Module):
    """First-order term w0 + sum_i w[x_i] (+ pooled bag of history ids), one output per task."""

    def __init__(self, schema: Schema, num_outputs: int, use_history: bool = True) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_outputs))
        self.tokens = tokens(schema)
        self.fields = token_tables(schema, num_outputs)
        self.history = nn.ModuleList()
        if use_history and schema.sequences is not None:
            sizes = [schema.field(s).vocab_size for s in schema.sequences.side_fields]
            self.history = nn.ModuleList(
                nn.ModuleList(nn.Embedding(v, num_outputs, padding_idx=PAD) for v in sizes)
                for _ in schema.sequences.behaviours
            )
        for table in self.modules():
            if isinstance(table, nn.Embedding):
                nn.init.zeros_(table.weight)

    def forward(self, batch: Batch) -> torch.Tensor:  # [B, num_outputs]
        y = self.bias + lookup_tokens(self.fields, self.tokens, batch.categorical).sum(1)
        for f, tables in enumerate(self.history):
            ids = batch.seq_ids[:, f]  # [B, n, K]
            for k, table in enumerate(tables):
                y = y + masked_mean(table(ids[..., k]), batch.seq_mask[:, f], dim=1)
        return y
