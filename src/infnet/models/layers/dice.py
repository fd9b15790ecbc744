"""DIN's Dice activation and the Dice / PReLU MLPs of DIN and DIEN."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Activation = Literal["dice", "prelu"]


class Dice(nn.Module):
    """Data-adaptive activation of DIN, eq. (9), over the last axis of a [N, dim] input."""

    def __init__(self, dim: int, eps: float = 1e-8, momentum: float = 0.1) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(dim))
        self.eps = eps
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if self.training and s.shape[0] > 1:
            mean, var = s.mean(0), s.var(0, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        p = torch.sigmoid((s - mean) / torch.sqrt(var + self.eps))
        return p * s + (1 - p) * self.alpha * s


def _activation(name: Activation, dim: int) -> nn.Module:
    return Dice(dim) if name == "dice" else nn.PReLU(dim)


def dice_mlp(
    in_dim: int,
    hidden: list[int] | tuple[int, ...],
    out_dim: int | None,
    activation: Activation = "dice",
    dropout: float = 0.0,
) -> nn.Sequential:
    """Linear -> Dice/PReLU -> dropout, repeated; `out_dim` adds a final plain Linear."""
    layers: list[nn.Module] = []
    dim = in_dim
    for h in hidden:
        layers += [nn.Linear(dim, h), _activation(activation, h)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        dim = h
    if out_dim is not None:
        layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)
