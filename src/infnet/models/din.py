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

from typing import Literal

import torch
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelConfig, ModelOutput, MultiTaskModel, register
from infnet.models.embedding import FeatureEmbedding

Activation = Literal["dice", "prelu"]


class Dice(nn.Module):
    """Data-adaptive activation of DIN, eq. (9), over the last axis of a [N, dim] input."""

    def __init__(self, dim: int, eps: float = 1e-8, momentum: float = 0.1) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(dim))
        self.eps = eps
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if self.training and s.shape[0] > 1:
            mean, var = s.mean(0), s.var(0, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        p = torch.sigmoid((s - mean) / torch.sqrt(var + self.eps))
        return p * s + (1 - p) * self.alpha * s


def _activation(name: Activation, dim: int) -> nn.Module:
    return Dice(dim) if name == "dice" else nn.PReLU(dim)


def dice_mlp(
    in_dim: int,
    hidden: list[int] | tuple[int, ...],
    out_dim: int | None,
    activation: Activation = "dice",
    dropout: float = 0.0,
) -> nn.Sequential:
    """Linear -> Dice/PReLU -> dropout, repeated; `out_dim` adds a final plain Linear."""
    layers: list[nn.Module] = []
    dim = in_dim
    for h in hidden:
        layers += [nn.Linear(dim, h), _activation(activation, h)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        dim = h
    if out_dim is not None:
        layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


class TargetAttention(nn.Module):
    """DIN's activation unit and weighted-sum pooling (eq. 3), without softmax.

    forward(query [B, d_q], keys [B, n, d_k], mask [B, n]) -> [B, d_k]; a row whose mask is
    all False pools to zeros. When d_q != d_k the query is first mapped to d_k by a linear
    layer, so that q - k and q * k are defined.
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        hidden: list[int] | tuple[int, ...] = (64, 32),
        activation: Activation = "dice",
    ) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_dim, key_dim) if query_dim != key_dim else nn.Identity()
        self.unit = dice_mlp(4 * key_dim, hidden, 1, activation)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.query_proj(query)
        rows, _ = mask.nonzero(as_tuple=True)
        # The unit runs on valid positions only: padding never enters Dice's statistics.
        k = keys[mask]  # [N_valid, d_k]
        qv = q[rows]
        a = self.unit(torch.cat([qv, k, qv - k, qv * k], dim=-1)).squeeze(-1)  # [N_valid]
        weights = keys.new_zeros(mask.shape).masked_scatter(mask, a)  # [B, n]
        return (weights.unsqueeze(-1) * keys * mask.unsqueeze(-1)).sum(1)


def target_query(embedding: FeatureEmbedding, batch: Batch) -> torch.Tensor:
    """The candidate item's side-field embeddings, concatenated: [B, K*d]."""
    return embedding.target(batch).flatten(1)


@register("din")
class DIN(MultiTaskModel):
    class Config(ModelConfig):
        attention_hidden: list[int] = [64, 32]
        tower_hidden: list[int] = [200, 80]
        activation: Activation = "dice"

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        d = config.embedding_dim
        self.embedding = FeatureEmbedding(schema, d)
        kd = len(self.embedding.side_field_index) * d
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
