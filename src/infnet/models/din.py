"""DIN: Deep Interest Network (Zhou et al., KDD 2018, arXiv 1706.06978), multi-task.

Paper -> code:
- eq. (3): v_U(A) = sum_j a(e_j, v_A) * e_j, with a(.) the "activation unit" (Fig. 2): an
  MLP over [v_A, e_j, v_A - e_j, v_A * e_j] (FuxiCTR/DeepCTR's form of the paper's "out
  product") ending in one linear output. No softmax: "normalization with sigma_i w_i = 1 is
  abandoned" to keep the intensity of the user's interests. -> `TargetAttention`.
- v_A (query) is the candidate's side-field embeddings concatenated (video id, author,
  tag, ...), e_j (keys) the same fields of the j-th behaviour, looked up in the same tables
  (`FeatureEmbedding.sequence`). One activation unit per behaviour type (click, like, ...).
- eq. (8)-(9): Dice, f(s) = p(s) s + (1 - p(s)) alpha s with p(s) = sigmoid((s - E[s]) /
  sqrt(Var[s] + eps)), batch statistics in training and moving averages at inference.
  -> `Dice` (config `activation`: "dice" as the paper's best, or "prelu").
- MLP 200 x 80 over [profile, pooled behaviours, candidate, context] (section 6.3); here
  one such tower per task over the shared embedding + attention backbone (`dice_mlp`).

In the activation unit Dice's statistics are taken over the valid (unpadded) behaviours
only, and the unit is evaluated only there, so padded positions never affect the output.
Mini-batch aware regularisation (section 4.3) belongs to the trainer's embedding penalty
and is not reproduced here.

Ignored inputs: the order of the behaviour sequences (the pooling is a weighted sum, as
in the paper).
"""

from __future__ import annotations

import torch
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelOutput, MultiTaskModel, SequenceModelConfig, register
from infnet.models.embedding import FeatureEmbedding, target_query
from infnet.models.layers.dice import Activation, dice_mlp
from infnet.models.layers.target_attention import TargetAttention


@register("din")
class DIN(MultiTaskModel):
    class Config(SequenceModelConfig):
        attention_hidden: list[int] = [64, 32]
        tower_hidden: list[int] = [200, 80]
        activation: Activation = "dice"

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        d = config.embedding_dim
        self.embedding = FeatureEmbedding(schema, d, config.time_aware, std=config.embedding_std)
        kd = self.embedding.num_side_tokens * d
        self.attention = nn.ModuleList(
            TargetAttention(kd, kd, config.attention_hidden, config.activation)
            for _ in range(schema.num_behaviours)
        )
        in_dim = schema.num_categorical_tokens * d + schema.num_behaviours * kd
        self.towers = nn.ModuleList(
            dice_mlp(in_dim, config.tower_hidden, 1, config.activation, config.dropout)
            for _ in schema.tasks
        )

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        batch = batch.per_row_histories(seq_index)
        c = self.embedding.categorical(batch)  # [B, M_tok, d]
        parts = [c.flatten(1)]
        if self.attention:
            q = target_query(self.embedding, batch)
            s = self.embedding.sequence(batch).flatten(-2)  # [B, F, n, K*d]
            parts += [att(q, s[:, f], batch.seq_mask[:, f]) for f, att in enumerate(self.attention)]
        x = torch.cat(parts, dim=1)
        return ModelOutput(torch.cat([tower(x) for tower in self.towers], dim=1))

    def ignored_inputs(self) -> list[str]:
        if self.schema.sequences is None:
            return []
        return ["order of the behaviour sequences (target attention is a weighted sum)"]
