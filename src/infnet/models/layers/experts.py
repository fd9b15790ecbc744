"""Experts and gates: the gated mixture, PLE's extraction levels (PLE, production) and the
expert-and-gate construction STEM shares."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from infnet.models.base import ModelConfig
from infnet.models.layers.mlp import MLP


def gated_mixture(gate_logits: torch.Tensor, experts: list[torch.Tensor]) -> torch.Tensor:
    """sum_i softmax(gate_logits)_i * experts[i]: [B, n], n x [B, D] -> [B, D]."""
    w = gate_logits.softmax(dim=-1).unsqueeze(1)  # [B, 1, n]
    return (w @ torch.stack(experts, dim=1)).squeeze(1)


class ExpertLevel(nn.Module):
    """One level of experts with their gates (a PLE extraction network, a STEM level):
    num_tasks x num_specific task experts and num_shared shared experts (MLPs), one gate
    per task (over its own and the shared experts, or over all of them when
    `task_gates_read_all`) and, unless final, a shared gate over all."""

    task_gates_read_all: ClassVar[bool] = False

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
        every = num_tasks * num_specific + num_shared
        task_gate_experts = every if self.task_gates_read_all else num_specific + num_shared
        self.specific = nn.ModuleList(
            nn.ModuleList(MLP(in_dim, expert_hidden, dropout=dropout) for _ in range(num_specific))
            for _ in range(num_tasks)
        )
        self.shared = nn.ModuleList(
            MLP(in_dim, expert_hidden, dropout=dropout) for _ in range(num_shared)
        )
        self.task_gates = nn.ModuleList(
            MLP(in_dim, gate_hidden, task_gate_experts, dropout) for _ in range(num_tasks)
        )
        self.shared_gate = None if final else MLP(in_dim, gate_hidden, every, dropout)
        self.out_dim = expert_hidden[-1]

    def experts(
        self, task_in: list[torch.Tensor], shared_in: torch.Tensor
    ) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
        """(E[k][j]: task k's expert j on task k's input, E_s[j]: shared expert j)."""
        E_s = [expert(shared_in) for expert in self.shared]
        E = [
            [expert(x) for expert in experts]
            for experts, x in zip(self.specific, task_in, strict=True)
        ]
        return E, E_s


class ExtractionNetwork(ExpertLevel):
    """One PLE level (a CGC when it is the only one): task inputs + shared input ->
    task outputs + shared output (None at the final level, which has no shared gate).
    Task k's gate mixes its own experts and the shared ones."""

    def forward(
        self, task_in: list[torch.Tensor], shared_in: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        E, E_s = self.experts(task_in, shared_in)
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
