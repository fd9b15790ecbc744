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

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelConfig, ModelOutput, MultiTaskModel, register
from infnet.models.embedding import FeatureEmbedding
from infnet.models.layers.cross import CrossNetworkV2
from infnet.models.layers.mlp import MLP, TaskTowers


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
        self.embedding = FeatureEmbedding(schema, config.embedding_dim, std=config.embedding_std)
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
