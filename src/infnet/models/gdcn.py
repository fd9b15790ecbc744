"""GDCN: Gated Deep Cross Network (Wang et al., CIKM 2023, "Towards Deeper, Lighter and
Interpretable Cross Network for CTR Prediction", arXiv 2311.04635), multi-task.

Paper -> code:
- eq. (2), gated cross layer (GCN):
      c_{l+1} = c_0 o (W_l^(c) c_l + b_l) o sigmoid(W_l^(g) c_l) + c_l
  -> `GatedCrossNetwork`; W^(g) has no bias, as in the paper and the official code.
- Fig. 2 structures: GDCN-S "stacked" (c_0 -> GCN -> DNN -> logit, FuxiCTR's `GDCN`) and
  GDCN-P "parallel" (concat(GCN(c_0), DNN(c_0)) -> logit, FuxiCTR's `GDCNP`).

c_0 is `FeatureEmbedding.flat_input`: the field embeddings and each behaviour's mean-pooled
history, concatenated. The paper's Field-level Dimension Optimization (FDO: re-training with
per-field embedding sizes chosen from a first run) is a training recipe across two runs,
not part of the network, and is not reproduced: every field has `embedding_dim`.
Multi-task: the gated cross network and DNN are the shared backbone, each task has its own
tower (`tower_hidden`, default [] = the paper's logit layer, one per task). Defaults:
FuxiCTR's GDCN (stacked, 3 cross layers, DNN 1024 x 512 x 256, ReLU).

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
from infnet.models.layers.mlp import MLP, TaskTowers


class GatedCrossNetwork(nn.Module):
    """A stack of GDCN gated cross layers: forward(c0 [B, D]) -> [B, D]."""

    def __init__(self, in_dim: int, num_layers: int) -> None:
        super().__init__()
        self.w_c = nn.ModuleList(nn.Linear(in_dim, in_dim, bias=False) for _ in range(num_layers))
        self.w_g = nn.ModuleList(nn.Linear(in_dim, in_dim, bias=False) for _ in range(num_layers))
        # The official code initialises b uniformly in [0, 1).
        self.b = nn.ParameterList(nn.Parameter(torch.rand(in_dim)) for _ in range(num_layers))

    def forward(self, c0: torch.Tensor) -> torch.Tensor:
        c = c0
        for w_c, w_g, b in zip(self.w_c, self.w_g, self.b, strict=True):
            c = c0 * (w_c(c) + b) * torch.sigmoid(w_g(c)) + c
        return c


@register("gdcn")
class GDCN(MultiTaskModel):
    class Config(ModelConfig):
        structure: Literal["stacked", "parallel"] = "stacked"
        num_cross_layers: int = 3
        deep_hidden: list[int] = [1024, 512, 256]
        tower_hidden: list[int] = []

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        self.embedding = FeatureEmbedding(schema, config.embedding_dim, std=config.embedding_std)
        in_dim = self.embedding.flat_dim(schema)
        self.cross = GatedCrossNetwork(in_dim, config.num_cross_layers)
        self.deep = MLP(in_dim, config.deep_hidden, dropout=config.dropout)
        out_dim = self.deep.out_dim + (in_dim if config.structure == "parallel" else 0)
        self.towers = TaskTowers(out_dim, schema.num_tasks, config.tower_hidden, config.dropout)

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        batch = batch.per_row_histories(seq_index)
        c0 = self.embedding.flat_input(batch)
        if self.config.structure == "stacked":
            h = self.deep(self.cross(c0))
        else:
            h = torch.cat([self.cross(c0), self.deep(c0)], dim=1)
        return ModelOutput(self.towers(h))

    def ignored_inputs(self) -> list[str]:
        if self.schema.sequences is None:
            return []
        return ["order of the behaviour sequences (read as mean-pooled histories)"]
