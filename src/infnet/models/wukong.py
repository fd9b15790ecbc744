"""WuKong (Zhang et al., Meta, ICML 2024, "Wukong: Towards a Scaling Law for Large-Scale
Recommendation", arXiv 2403.02545), multi-task.

Paper -> code, section 3, on a matrix of embeddings X_i [n_i, d]:
- Interaction layer: X_{i+1} = LN(concat(FMB_i(X_i), LCB_i(X_i)) + X_i)  -> `WuKongLayer`;
  when n_i != n_F + n_L the residual X_i is mapped to n_F + n_L embeddings by a linear map
  over the embedding axis (the paper's "linear layer when dimensions do not match").
- FMB(X) = reshape(MLP(LN(flatten(FM(X))))) with the optimised FM, FM(X) = X (X^T Y),
  Y [n, k] a learned low-rank projection (computing X^T Y first costs O(n d k), not
  O(n^2 d)); the output is n_F embeddings of size d.
- LCB(X) = W_L X, W_L [n_L, n]: a linear recombination of the embeddings.
- A final MLP over the flattened last layer gives the prediction; here one per task.

X_0: the field embeddings plus one mean-pooled token per (behaviour type, side field)
(`fm.field_tokens`), all of size `embedding_dim`. The layer norm runs over the flattened
layer output (as FuxiCTR). Defaults: FuxiCTR's where it has the same knob (3 layers,
project dim k = 8, FMB MLP 200 x 200, top MLP 32 x 32); n_F = n_L = 16 tokens per layer,
as TorchEasyRec's example (the paper scales these, it has no single default).

Ignored inputs: the order of the behaviour sequences (histories are mean-pooled tokens).
"""

from __future__ import annotations

import torch
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelConfig, ModelOutput, MultiTaskModel, register
from infnet.models.embedding import FeatureEmbedding, field_tokens, num_field_tokens
from infnet.models.layers.mlp import MLP, TaskTowers


class TokenLinear(nn.Module):
    """A linear map over the embedding (token) axis: [B, n_in, d] -> [B, n_out, d]."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / n_in**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("on,bnd->bod", self.weight, x)


class FMB(nn.Module):
    """Factorization Machine Block: [B, n, d] -> [B, n_F, d]."""

    def __init__(
        self, n: int, d: int, n_out: int, k: int, hidden: list[int], dropout: float
    ) -> None:
        super().__init__()
        self.n_out, self.d = n_out, d
        self.y = nn.Parameter(torch.randn(n, k) / n**0.5)  # Y
        self.norm = nn.LayerNorm(n * k)
        self.mlp = MLP(n * k, hidden, n_out * d, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fm = x @ (x.transpose(1, 2) @ self.y)  # X (X^T Y): [B, n, k]
        return self.mlp(self.norm(fm.flatten(1))).view(-1, self.n_out, self.d)


class WuKongLayer(nn.Module):
    def __init__(
        self, n: int, d: int, n_f: int, n_l: int, k: int, hidden: list[int], dropout: float
    ) -> None:
        super().__init__()
        self.fmb = FMB(n, d, n_f, k, hidden, dropout)
        self.lcb = TokenLinear(n, n_l)  # W_L
        self.residual = TokenLinear(n, n_f + n_l) if n != n_f + n_l else nn.Identity()
        self.norm = nn.LayerNorm((n_f + n_l) * d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.fmb(x), self.lcb(x)], dim=1) + self.residual(x)
        return self.norm(y.flatten(1)).view_as(y)


@register("wukong")
class WuKong(MultiTaskModel):
    class Config(ModelConfig):
        num_layers: int = 3
        fmb_tokens: int = 16  # n_F
        lcb_tokens: int = 16  # n_L
        project_dim: int = 8  # k
        fmb_hidden: list[int] = [200, 200]
        tower_hidden: list[int] = [32, 32]

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        d = config.embedding_dim
        self.embedding = FeatureEmbedding(schema, d, std=config.embedding_std)
        n, layers = num_field_tokens(schema), []
        for _ in range(config.num_layers):
            layers.append(
                WuKongLayer(
                    n,
                    d,
                    config.fmb_tokens,
                    config.lcb_tokens,
                    config.project_dim,
                    config.fmb_hidden,
                    config.dropout,
                )
            )
            n = config.fmb_tokens + config.lcb_tokens
        self.layers = nn.Sequential(*layers)
        self.towers = TaskTowers(n * d, schema.num_tasks, config.tower_hidden, config.dropout)

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        batch = batch.per_row_histories(seq_index)
        x = self.layers(field_tokens(self.embedding, batch))
        return ModelOutput(self.towers(x.flatten(1)))

    def ignored_inputs(self) -> list[str]:
        if self.schema.sequences is None:
            return []
        return ["order of the behaviour sequences (read as mean-pooled field tokens)"]
