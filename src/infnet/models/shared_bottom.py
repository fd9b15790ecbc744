"""Shared-Bottom (Caruana, "Multitask Learning", Machine Learning 1997).

Equation to code (the form used by MMoE's paper, Ma et al. 2018, Eq. 1):

    y_k = h^k(f(x))

- x: `FeatureEmbedding.flat_input`: the field embeddings and each behaviour's masked-mean
  pooled history, concatenated;
- f: `self.bottom`, one MLP shared by all tasks (FuxiCTR's default sizes 512-256-128;
  Caruana gives no sizes);
- h^k: `self.towers`, one MLP tower per task (FuxiCTR's 128-64) ending in one output: a
  logit for a binary task, a value for a regression task.

Inputs read only as pooled means: the behaviour histories (order and individual
positions are lost), see `ignored_inputs`.
"""

from __future__ import annotations

import torch
from pydantic import Field

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelConfig, ModelOutput, MultiTaskModel, register
from infnet.models.embedding import FeatureEmbedding, pooled_history_inputs
from infnet.models.layers.mlp import MLP, TaskTowers


@register("shared_bottom")
class SharedBottom(MultiTaskModel):
    class Config(ModelConfig):
        bottom_hidden: list[int] = Field(default=[512, 256, 128], min_length=1)
        tower_hidden: list[int] = [128, 64]

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        self.embedding = FeatureEmbedding(schema, config.embedding_dim, std=config.embedding_std)
        self.bottom = MLP(
            self.embedding.flat_dim(schema), config.bottom_hidden, dropout=config.dropout
        )
        self.towers = TaskTowers(
            self.bottom.out_dim, schema.num_tasks, config.tower_hidden, config.dropout
        )

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        batch = batch.per_row_histories(seq_index)
        return ModelOutput(self.towers(self.bottom(self.embedding.flat_input(batch))))

    def ignored_inputs(self) -> list[str]:
        return pooled_history_inputs(self.schema)
