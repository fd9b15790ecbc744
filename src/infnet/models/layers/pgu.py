"""The Proxy Gated Unit: INFNet's homogeneous flow."""

from __future__ import annotations

import torch
from torch import nn

from infnet.models.layers.mlp import MLP


class PGU(nn.Module):
    """Proxy Gated Unit: PGU(X, X~) = X * gate(MLP(flatten(X~))), one channel gate in R^d
    per sample, broadcast over all tokens of X (cost O(n * d) in the token count n).

    gate: "sigmoid" (the paper), "2sigmoid" (2 * sigmoid: starts near 1 instead of 0.5, so
    stacked blocks do not shrink the tokens), "residual" (X + X * sigmoid = X * (1 + sigmoid)).
    """

    def __init__(
        self,
        num_proxies: int,
        dim: int,
        hidden: list[int],
        gate: str = "sigmoid",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if gate not in {"sigmoid", "2sigmoid", "residual"}:
            raise ValueError(f"PGU gate must be sigmoid, 2sigmoid or residual, got {gate!r}")
        self.gate = gate
        self.mlp = MLP(num_proxies * dim, hidden, dim, dropout)

    def forward(self, x: torch.Tensor, proxies: torch.Tensor) -> torch.Tensor:
        # x [B, n, d], proxies [B, p, d] -> [B, n, d]
        g = torch.sigmoid(self.mlp(proxies.flatten(1))).unsqueeze(1)  # [B, 1, d]
        if self.gate == "2sigmoid":
            g = 2.0 * g
        elif self.gate == "residual":
            g = 1.0 + g
        return x * g
