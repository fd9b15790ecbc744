"""The production baseline of INFNet's online test (Li et al., arXiv 2508.11565): DIN over
the behaviour sequences + DCNv2 crossing + PLE multi-task layers, as one model.

The paper describes its online baseline only as this combination; each part is the model
of its own paper, reused from its file:

- DIN (Zhou et al., KDD 2018, eq. 3): for each behaviour type f,
      v_f = sum_j a(e_(f,j), v_A) e_(f,j)
  with v_A the target item's side-field embeddings concatenated (the query) and e_(f,j)
  the same fields of the j-th event of behaviour f (`din.TargetAttention`, one activation
  unit per behaviour type, no softmax, padded positions excluded; an empty history pools
  to zero).
- DCNv2 (Wang et al., WWW 2021, eq. 1): x_0 = [field embeddings, v_1 .. v_F],
      x_(l+1) = x_0 o (W_l x_l + b_l) + x_l            (`dcnv2.CrossNetworkV2`)
  3 full-rank layers as FuxiCTR's DCNv2 (`cross_low_rank`, `cross_experts` give the
  low-rank mixture of eq. 3-4).
- PLE (Tang et al., RecSys 2020, eq. 5-6) on the crossed x_L, then one tower per task
  (`ple.ProgressiveLayeredExtraction`, the PLE model's defaults).

This is DCNv2's "stacked" structure with PLE's experts in place of the deep network.

Ignored inputs: the order of each behaviour sequence (target attention is a weighted sum
over positions).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelOutput, MultiTaskModel, SequenceModelConfig, register
from infnet.models.embedding import FeatureEmbedding, target_query
from infnet.models.layers.cross import CrossNetworkV2
from infnet.models.layers.dice import Activation
from infnet.models.layers.experts import PLEConfig, build_ple
from infnet.models.layers.mlp import TaskTowers, towers_over
from infnet.models.layers.target_attention import TargetAttention


@register("production")
class Production(MultiTaskModel):
    class Config(PLEConfig, SequenceModelConfig):
        attention_hidden: list[int] = [64, 32]
        attention_activation: Activation = "dice"
        cross_layers: int = Field(default=3, ge=1)
        cross_low_rank: int | None = Field(default=None, ge=1)
        cross_experts: int = Field(default=1, ge=1)

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        d = config.embedding_dim
        self.embedding = FeatureEmbedding(schema, d, config.time_aware, std=config.embedding_std)
        kd = self.embedding.num_side_tokens * d  # width of v_A and of each e_(f,j)
        self.attention = nn.ModuleList(
            TargetAttention(kd, kd, config.attention_hidden, config.attention_activation)
            for _ in range(schema.num_behaviours)
        )
        in_dim = schema.num_categorical_tokens * d + schema.num_behaviours * kd
        self.cross = CrossNetworkV2(
            in_dim, config.cross_layers, config.cross_low_rank, config.cross_experts
        )
        self.ple = build_ple(in_dim, schema.num_tasks, config)
        self.towers = TaskTowers(
            self.ple.out_dim, schema.num_tasks, config.tower_hidden, config.dropout
        )

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        batch = batch.per_row_histories(seq_index)
        c = self.embedding.categorical(batch)  # [B, M_tok, d]
        parts = [c.flatten(1)]
        if self.attention:
            v_A = target_query(self.embedding, batch)  # [B, K*d]
            e = self.embedding.sequence(batch).flatten(-2)  # [B, F, n, K*d]
            parts += [
                att(v_A, e[:, f], batch.seq_mask[:, f]) for f, att in enumerate(self.attention)
            ]
        x_L = self.cross(torch.cat(parts, dim=1))
        return ModelOutput(towers_over(self.towers, self.ple(x_L)))

    def ignored_inputs(self) -> list[str]:
        if self.schema.sequences is None:
            return []
        return [
            f"order of the {b!r} history (target attention is a weighted sum over its positions)"
            for b in self.schema.sequences.behaviours
        ]
