"""DCNv2: Deep & Cross Network V2 (Wang et al., WWW 2021, arXiv 2008.13535), multi-task.

Paper -> code (`CrossNetworkV2`):
- eq. (1), cross layer: x_{l+1} = x_0 o (W_l x_l + b_l) + x_l          (low_rank=None)
- eq. (2), low rank:    x_{l+1} = x_0 o (U_l (V_l^T x_l) + b_l) + x_l   (low_rank=r, 1 expert)
- eq. (3)-(4), mixture of low-rank experts (DCN-Mix):
      x_{l+1} = sum_i G_i(x_l) E_i(x_l) + x_l,
      E_i(x_l) = x_0 o (U_i g(C_i g(V_i^T x_l)) + b_l),
  g = tanh, G_i a linear gate per expert normalised by a softmax over the experts (the
  paper leaves g and G open; DeepCTR's CrossNetMix uses these). num_experts > 1 without
  low_rank mixes full-rank experts E_i(x_l) = x_0 o (W_i x_l + b_l).
- Fig. 2 structures: "stacked" (x_0 -> cross -> deep -> logit) and "parallel"
  (concat(cross(x_0), deep(x_0)) -> logit).

x_0 is `FeatureEmbedding.flat_input`: the field embeddings and each behaviour's mean-pooled
history, concatenated. Multi-task: cross and deep networks are the shared backbone and each
task has its own tower (`tower_hidden`, default [] = the paper's logit layer, one per task).
Defaults: FuxiCTR's (parallel, 3 cross layers, full rank, deep 500 x 3, ReLU).

Ignored inputs: the order of the behaviour sequences (histories are mean-pooled).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelConfig, ModelOutput, MultiTaskModel, register
from infnet.models.embedding import FeatureEmbedding
from infnet.models.layers import MLP, TaskTowers


class CrossLayerV2(nn.Module):
    """One cross layer: sum_i G_i(x_l) * x_0 o (expert_i(x_l) + b) + x_l."""

    def __init__(self, in_dim: int, low_rank: int | None, num_experts: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(in_dim))
        if low_rank is None:
            self.experts = nn.ModuleList(
                nn.Linear(in_dim, in_dim, bias=False) for _ in range(num_experts)
            )
        else:
            nonlinear = num_experts > 1  # eq. (2) is purely linear; eq. (4) adds g and C_i
            self.experts = nn.ModuleList(
                nn.Sequential(
                    nn.Linear(in_dim, low_rank, bias=False),  # V_i^T
                    *(
                        [nn.Tanh(), nn.Linear(low_rank, low_rank, bias=False), nn.Tanh()]
                        if nonlinear
                        else []
                    ),  # g(C_i g(.))
                    nn.Linear(low_rank, in_dim, bias=False),  # U_i
                )
                for _ in range(num_experts)
            )
        self.gate = nn.Linear(in_dim, num_experts, bias=False) if num_experts > 1 else None

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        e = torch.stack(
            [x0 * (expert(x) + self.bias) for expert in self.experts], dim=1
        )  # [B, E, D]
        if self.gate is None:
            return e[:, 0] + x
        g = torch.softmax(self.gate(x), dim=-1).unsqueeze(-1)  # [B, E, 1]
        return (g * e).sum(1) + x


class CrossNetworkV2(nn.Module):
    """A stack of DCNv2 cross layers: forward(x0 [B, D]) -> [B, D]."""

    def __init__(
        self, in_dim: int, num_layers: int, low_rank: int | None = None, num_experts: int = 1
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"CrossNetworkV2: num_experts must be >= 1, got {num_experts}")
        self.layers = nn.ModuleList(
            CrossLayerV2(in_dim, low_rank, num_experts) for _ in range(num_layers)
        )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x


@register("dcnv2")
class DCNv2(MultiTaskModel):
    class Config(ModelConfig):
        structure: Literal["parallel", "stacked"] = "parallel"
        num_cross_layers: int = 3
        low_rank: int | None = None
        num_experts: int = 1
        deep_hidden: list[int] = [500, 500, 500]
        tower_hidden: list[int] = []

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        self.embedding = FeatureEmbedding(schema, config.embedding_dim)
        in_dim = self.embedding.flat_dim(schema)
        self.cross = CrossNetworkV2(
            in_dim, config.num_cross_layers, config.low_rank, config.num_experts
        )
        self.deep = MLP(in_dim, config.deep_hidden, dropout=config.dropout)
        out_dim = self.deep.out_dim + (in_dim if config.structure == "parallel" else 0)
        self.towers = TaskTowers(out_dim, schema.num_tasks, config.tower_hidden, config.dropout)

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        batch = batch.per_row_histories(seq_index)
        x0 = self.embedding.flat_input(batch)
        if self.config.structure == "stacked":
            h = self.deep(self.cross(x0))
        else:
            h = torch.cat([self.cross(x0), self.deep(x0)], dim=1)
        return ModelOutput(self.towers(h))

    def ignored_inputs(self) -> list[str]:
        if self.schema.sequences is None:
            return []
        return ["order of the behaviour sequences (read as mean-pooled histories)"]
