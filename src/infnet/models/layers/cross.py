"""DCNv2's cross network: x_{l+1} = x0 * (W x_l + b) + x_l, full-rank or low-rank (DCNv2, production)."""

from __future__ import annotations

import torch
from torch import nn


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
