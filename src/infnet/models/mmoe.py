"""MMoE (Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018).

Equations to code:

    y_k    = h^k(f^k(x))                                   (Eq. 6)
    f^k(x) = sum_i g^k(x)_i f_i(x)                          (Eq. 7)
    g^k(x) = softmax(W_gk x)                                (Eq. 8)

- x: `FeatureEmbedding.flat_input` (field embeddings + masked-mean pooled histories);
- f_i: `MixtureOfExperts.experts`, n expert MLPs (n = 8 as in the paper; each expert has
  FuxiCTR's 512-256-128 layers, the paper's are task-dependent single layers);
- g^k: `MixtureOfExperts.gates`, one softmax gate per task, linear as in Eq. 8
  (`gate_hidden` adds hidden layers, as FuxiCTR allows);
- h^k: one MLP tower per task (FuxiCTR's 128-64).

Inputs read only as pooled means: the behaviour histories, see `ignored_inputs`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelConfig, ModelOutput, MultiTaskModel, register
from infnet.models.embedding import FeatureEmbedding, pooled_history_inputs
from infnet.models.layers.mlp import MLP, TaskTowers


class MixtureOfExperts(nn.Module):
    """n expert MLPs mixed by G softmax gates: x [B, D] -> ([B, G, D_e], gates [B, G, n])."""

    def __init__(
        self,
        in_dim: int,
        num_experts: int,
        num_gates: int,
        expert_hidden: list[int],
        gate_hidden: list[int],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.experts = nn.ModuleList(
            MLP(in_dim, expert_hidden, dropout=dropout) for _ in range(num_experts)
        )
        self.gates = nn.ModuleList(
            MLP(in_dim, gate_hidden, num_experts, dropout) for _ in range(num_gates)
        )
        self.out_dim = expert_hidden[-1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.stack([expert(x) for expert in self.experts], dim=1)  # [B, n, D_e]
        g = torch.stack([gate(x).softmax(dim=-1) for gate in self.gates], dim=1)  # [B, G, n]
        return g @ f, g


@register("mmoe")
class MMoE(MultiTaskModel):
    class Config(ModelConfig):
        num_experts: int = Field(default=8, ge=1)
        expert_hidden: list[int] = Field(default=[512, 256, 128], min_length=1)
        gate_hidden: list[int] = []
        tower_hidden: list[int] = [128, 64]

    one_gate: ClassVar[bool] = False  # OMoE: one gate shared by all tasks

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        self.embedding = FeatureEmbedding(schema, config.embedding_dim, std=config.embedding_std)
        self.moe = MixtureOfExperts(
            self.embedding.flat_dim(schema),
            config.num_experts,
            1 if self.one_gate else schema.num_tasks,
            config.expert_hidden,
            config.gate_hidden,
            config.dropout,
        )
        self.towers = TaskTowers(
            self.moe.out_dim, schema.num_tasks, config.tower_hidden, config.dropout
        )

    def gate_weights(self, batch: Batch) -> torch.Tensor:  # [B, G, n_experts]
        """The gates' softmax weights over the experts (G = N_task for MMoE, 1 for OMoE)."""
        return self.moe(self.embedding.flat_input(batch))[1]

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        batch = batch.per_row_histories(seq_index)
        f, _ = self.moe(self.embedding.flat_input(batch))  # [B, G, D_e]
        f = f.expand(-1, self.schema.num_tasks, -1)  # OMoE: the one mixture feeds every tower
        return ModelOutput(
            torch.cat([tower(f[:, k]) for k, tower in enumerate(self.towers.towers)], dim=-1)
        )

    def ignored_inputs(self) -> list[str]:
        return pooled_history_inputs(self.schema)
