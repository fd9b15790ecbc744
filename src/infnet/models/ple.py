"""PLE (Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning
(MTL) Model for Personalized Recommendations", RecSys 2020).

Equations to code (k a task, s the shared part, j a level, N levels):

    CGC (one level):   y^k(x) = t^k(g^k(x))                               (Eq. 4)
                       g^k(x) = w^k(x) S^k(x)                              (Eq. 2)
                       w^k(x) = softmax(W_g^k x)                           (Eq. 3)
                       S^k(x) = [E_(k,1) .. E_(k,m_k), E_(s,1) .. E_(s,m_s)]
    PLE (stacked):     g^(k,j)(x) = w^(k,j)(g^(k,j-1)(x)) S^(k,j)(x)       (Eq. 5)
                       experts of task k at level j read g^(k,j-1), shared experts
                       read g^(s,j-1); g^(k,0) = g^(s,0) = x
                       the shared gate g^(s,j) mixes ALL experts of level j (every
                       task's and the shared ones), at levels j < N only
                       y^k(x) = t^k(g^(k,N)(x))                             (Eq. 6)

- x: `FeatureEmbedding.flat_input` (field embeddings + masked-mean pooled histories);
- `ExtractionNetwork`: one level j (experts E, task gates w^(k,j), shared gate w^(s,j));
- `ProgressiveLayeredExtraction`: the N stacked levels, x -> [g^(k,N)]_k;
- t^k: one MLP tower per task.

Defaults: two levels and linear softmax gates as in the paper; one specific expert per
task and one shared expert, expert layers 512-256-128 and towers 128-64 (FuxiCTR's
defaults; the paper sizes them per dataset). FuxiCTR's shared gate mixes only the
shared experts; this follows the paper (all experts).

Inputs read only as pooled means: the behaviour histories, see `ignored_inputs`.
"""

from __future__ import annotations

import torch

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelOutput, MultiTaskModel, register
from infnet.models.embedding import FeatureEmbedding, pooled_history_inputs
from infnet.models.layers.experts import PLEConfig, build_ple
from infnet.models.layers.mlp import TaskTowers, towers_over


@register("ple")
class PLE(MultiTaskModel):
    class Config(PLEConfig):
        """PLE's options (see `PLEConfig`)."""

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        self.embedding = FeatureEmbedding(schema, config.embedding_dim, std=config.embedding_std)
        self.ple = build_ple(self.embedding.flat_dim(schema), schema.num_tasks, config)
        self.towers = TaskTowers(
            self.ple.out_dim, schema.num_tasks, config.tower_hidden, config.dropout
        )

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        batch = batch.per_row_histories(seq_index)
        return ModelOutput(towers_over(self.towers, self.ple(self.embedding.flat_input(batch))))

    def ignored_inputs(self) -> list[str]:
        return pooled_history_inputs(self.schema)
