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
from pydantic import Field
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelConfig, ModelOutput, MultiTaskModel, register
from infnet.models.embedding import FeatureEmbedding
from infnet.models.layers import MLP, TaskTowers
from infnet.models.shared_bottom import pooled_history_inputs


def gated_mixture(gate_logits: torch.Tensor, experts: list[torch.Tensor]) -> torch.Tensor:
    """sum_i softmax(gate_logits)_i * experts[i]: [B, n], n x [B, D] -> [B, D]."""
    w = gate_logits.softmax(dim=-1).unsqueeze(1)  # [B, 1, n]
    return (w @ torch.stack(experts, dim=1)).squeeze(1)


class ExtractionNetwork(nn.Module):
    """One PLE level (a CGC when it is the only one): task inputs + shared input ->
    task outputs + shared output (None at the final level, which has no shared gate)."""

    def __init__(
        self,
        in_dim: int,
        num_tasks: int,
        num_specific: int,
        num_shared: int,
        expert_hidden: list[int],
        gate_hidden: list[int],
        dropout: float,
        final: bool,
    ) -> None:
        super().__init__()
        self.specific = nn.ModuleList(
            nn.ModuleList(MLP(in_dim, expert_hidden, dropout=dropout) for _ in range(num_specific))
            for _ in range(num_tasks)
        )
        self.shared = nn.ModuleList(
            MLP(in_dim, expert_hidden, dropout=dropout) for _ in range(num_shared)
        )
        self.task_gates = nn.ModuleList(
            MLP(in_dim, gate_hidden, num_specific + num_shared, dropout) for _ in range(num_tasks)
        )
        self.shared_gate = (
            None
            if final
            else MLP(in_dim, gate_hidden, num_tasks * num_specific + num_shared, dropout)
        )
        self.out_dim = expert_hidden[-1]

    def forward(
        self, task_in: list[torch.Tensor], shared_in: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        E_s = [expert(shared_in) for expert in self.shared]
        E = [
            [expert(x) for expert in experts]
            for experts, x in zip(self.specific, task_in, strict=True)
        ]
        task_out = [
            gated_mixture(gate(x), E_k + E_s)
            for gate, x, E_k in zip(self.task_gates, task_in, E, strict=True)
        ]
        if self.shared_gate is None:
            return task_out, None
        return task_out, gated_mixture(
            self.shared_gate(shared_in), [e for E_k in E for e in E_k] + E_s
        )


class ProgressiveLayeredExtraction(nn.Module):
    """N stacked extraction levels: x [B, D] -> one representation per task, N_task x [B, D_e]."""

    def __init__(
        self,
        in_dim: int,
        num_tasks: int,
        num_levels: int,
        num_specific: int,
        num_shared: int,
        expert_hidden: list[int],
        gate_hidden: list[int],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.levels = nn.ModuleList(
            ExtractionNetwork(
                in_dim if j == 0 else expert_hidden[-1],
                num_tasks,
                num_specific,
                num_shared,
                expert_hidden,
                gate_hidden,
                dropout,
                final=j == num_levels - 1,
            )
            for j in range(num_levels)
        )
        self.out_dim = expert_hidden[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        task_in, shared_in = [x] * self.num_tasks, x
        for level in self.levels:
            task_in, shared_in = level(task_in, shared_in)
        return task_in


class PLEConfig(ModelConfig):
    """The PLE options, shared with the production model."""

    num_levels: int = Field(default=2, ge=1)
    num_specific_experts: int = Field(default=1, ge=1)
    num_shared_experts: int = Field(default=1, ge=1)
    expert_hidden: list[int] = Field(default=[512, 256, 128], min_length=1)
    gate_hidden: list[int] = []
    tower_hidden: list[int] = [128, 64]


def build_ple(in_dim: int, num_tasks: int, config: PLEConfig) -> ProgressiveLayeredExtraction:
    return ProgressiveLayeredExtraction(
        in_dim,
        num_tasks,
        config.num_levels,
        config.num_specific_experts,
        config.num_shared_experts,
        config.expert_hidden,
        config.gate_hidden,
        config.dropout,
    )


def towers_over(towers: TaskTowers, per_task: list[torch.Tensor]) -> torch.Tensor:
    """Task k's tower on task k's representation: N_task x [B, D] -> [B, N_task]."""
    return torch.cat([tower(h) for tower, h in zip(towers.towers, per_task, strict=True)], dim=-1)


@register("ple")
class PLE(MultiTaskModel):
    class Config(PLEConfig):
        """PLE's options (see `PLEConfig`)."""

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        self.embedding = FeatureEmbedding(schema, config.embedding_dim)
        self.ple = build_ple(self.embedding.flat_dim(schema), schema.num_tasks, config)
        self.towers = TaskTowers(
            self.ple.out_dim, schema.num_tasks, config.tower_hidden, config.dropout
        )

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        batch = batch.per_row_histories(seq_index)
        return ModelOutput(towers_over(self.towers, self.ple(self.embedding.flat_input(batch))))

    def ignored_inputs(self) -> list[str]:
        return pooled_history_inputs(self.schema)
