"""STEM (Su et al., "STEM: Unleashing the Power of Embeddings for Multi-task
Recommendation", AAAI 2024): shared and task-specific embeddings with All-Forward
Task-specific-Backward (AFTB) gating.

Equations to code (T tasks, k and j tasks, s the shared part, sg = stop-gradient):

    embeddings:   x_s = Emb_s(x),  x_k = Emb_k(x)        one FeatureEmbedding each
    experts:      E_(k,i) = MLP(x_k)   (task k's specific experts read only x_k)
                  E_(s,i) = MLP(x_s)   (shared experts read only x_s)
    AFTB gate:    S^k = [sg(E_1) .. E_k .. sg(E_T), E_s]   every task's experts, the
                  other tasks' stopped: all embeddings go forward into task k's
                  prediction, but task k's loss reaches only Emb_k and Emb_s
                  g^k = softmax(W_g^k (x_k + x_s)) S^k
    towers:       y_k = t^k(g^k)

The gate input x_k + x_s, the shared gate of a non-final level (softmax over all experts,
reading x_s) and the default sizes (one specific and one shared expert, one level,
experts 512-256-128, towers 128-64) follow the authors' FuxiCTR-based code; the gates
are linear as in PLE (`gate_hidden` adds hidden layers, the authors' code uses 128-64).

Deviation: with more than one level, the shared gate also stops the gradient of the
task-specific experts it mixes, so that AFTB holds through the stack (task k's loss
would otherwise reach task j's embedding through the shared path of the next level).
With the default single level this changes nothing.

Inputs read only as pooled means: the behaviour histories (each embedding set pools them
with its own tables), see `ignored_inputs`.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelConfig, ModelOutput, MultiTaskModel, register
from infnet.models.embedding import FeatureEmbedding, pooled_history_inputs
from infnet.models.layers.experts import ExpertLevel, gated_mixture
from infnet.models.layers.mlp import TaskTowers, towers_over


class STEMLevel(ExpertLevel):
    """One STEM level: task inputs x_k + shared input x_s -> task outputs + shared output
    (None at the final level). Task k's gate reads every expert, the other tasks' with
    their gradient stopped."""

    task_gates_read_all = True

    def forward(
        self, task_in: list[torch.Tensor], shared_in: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        E, E_s = self.experts(task_in, shared_in)
        task_out = []
        for k, (gate, x_k) in enumerate(zip(self.task_gates, task_in, strict=True)):
            S_k = [e if j == k else e.detach() for j, E_j in enumerate(E) for e in E_j] + E_s
            task_out.append(gated_mixture(gate(x_k + shared_in), S_k))
        if self.shared_gate is None:
            return task_out, None
        S_s = [e.detach() for E_j in E for e in E_j] + E_s
        return task_out, gated_mixture(self.shared_gate(shared_in), S_s)


@register("stem")
class STEM(MultiTaskModel):
    class Config(ModelConfig):
        num_levels: int = Field(default=1, ge=1)
        num_specific_experts: int = Field(default=1, ge=1)
        num_shared_experts: int = Field(default=1, ge=1)
        expert_hidden: list[int] = Field(default=[512, 256, 128], min_length=1)
        gate_hidden: list[int] = []
        tower_hidden: list[int] = [128, 64]

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        d = config.embedding_dim
        self.shared_embedding = FeatureEmbedding(schema, d, std=config.embedding_std)
        self.task_embeddings = nn.ModuleList(
            FeatureEmbedding(schema, d, std=config.embedding_std) for _ in schema.tasks
        )
        in_dim = self.shared_embedding.flat_dim(schema)
        self.levels = nn.ModuleList(
            STEMLevel(
                in_dim if j == 0 else config.expert_hidden[-1],
                schema.num_tasks,
                config.num_specific_experts,
                config.num_shared_experts,
                config.expert_hidden,
                config.gate_hidden,
                config.dropout,
                final=j == config.num_levels - 1,
            )
            for j in range(config.num_levels)
        )
        self.towers = TaskTowers(
            config.expert_hidden[-1], schema.num_tasks, config.tower_hidden, config.dropout
        )

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        batch = batch.per_row_histories(seq_index)
        task_in = [emb.flat_input(batch) for emb in self.task_embeddings]
        shared_in = self.shared_embedding.flat_input(batch)
        for level in self.levels:
            task_in, shared_in = level(task_in, shared_in)
        return ModelOutput(towers_over(self.towers, task_in))

    def ignored_inputs(self) -> list[str]:
        return pooled_history_inputs(self.schema)
