"""FM: Factorization Machines (Rendle, ICDM 2010), multi-task.

Paper, eq. (1) and the O(kn) form of lemma 3.1, over fields i with embeddings v_i:

    y = w0 + sum_i w_i + sum_{i<j} <v_i, v_j>
    sum_{i<j} <v_i, v_j> = 1/2 * sum_f [ (sum_i v_{i,f})^2 - sum_i v_{i,f}^2 ]

Code: `LinearTerm` (lr.py) is w0 + sum_i w_i; `bi` below is the vector inside the sum over
f (He and Chua's Bi-Interaction pooling), computed once and shared by the tasks.

Fields: the M categorical field embeddings, plus, when the schema has behaviour sequences,
one extra field per (behaviour type, side field): the masked mean of the history's
embeddings (`FeatureEmbedding.pooled_sequence`), i.e. the implicit-feedback set of SVD++
/ FM-for-sets, mean-normalised so it does not grow with history length. The first-order
term holds the matching bag of history ids.

Multi-task choice: the embeddings and the pairwise term are shared; each task t has its own
first-order weights and bias, and weighs the d dimensions of the shared pairwise term:

    y_t = w0_t + sum_i w_{t,i} + <u_t, bi(v)>,  u_t initialised to 1

so every task starts as exactly Rendle's FM and may rescale (or flip) interaction
dimensions for itself (the "per-task bias-and-scale" option, per dimension). Per-task
embedding tables would multiply the largest part of the model by N_task.

Ignored inputs: the order of the behaviour sequences (histories are mean-pooled).
"""

from __future__ import annotations

import torch
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelConfig, ModelOutput, MultiTaskModel, register
from infnet.models.embedding import FeatureEmbedding, field_tokens
from infnet.models.layers.linear import LinearTerm


@register("fm")
class FM(MultiTaskModel):
    class Config(ModelConfig):
        use_history: bool = True

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        self.embedding = FeatureEmbedding(schema, config.embedding_dim, std=config.embedding_std)
        self.linear = LinearTerm(schema, schema.num_tasks, config.use_history)
        self.task_weight = nn.Parameter(torch.ones(schema.num_tasks, config.embedding_dim))  # u_t

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        batch = batch.per_row_histories(seq_index)
        if self.config.use_history:
            v = field_tokens(self.embedding, batch)
        else:
            v = self.embedding.categorical(batch)
        bi = 0.5 * (v.sum(1).pow(2) - v.pow(2).sum(1))  # [B, d]
        return ModelOutput(self.linear(batch) + bi @ self.task_weight.T)

    def ignored_inputs(self) -> list[str]:
        if self.schema.sequences is None:
            return []
        if not self.config.use_history:
            return ["behaviour sequences (use_history=False)"]
        return ["order of the behaviour sequences (read as mean-pooled field tokens)"]
