"""The gated broadcast unit: INFNet v2's broadcast phase."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from infnet.models.layers.mlp import MLP

Form = Literal["affine", "scale", "shift"]


class BGU(nn.Module):
    """Gated broadcast unit: one per-channel modulation from a group's hubs, shared by all of
    the group's tokens (cost O(n * d) in the token count n),

        [alpha || beta] = MLP(flatten(H)),    X <- LN(X + X * sigmoid(alpha) + beta)

    form: "affine" (the paper), "scale" (no beta) or "shift" (no alpha), its micro-ablations.
    """

    def __init__(
        self,
        num_hubs: int,
        dim: int,
        hidden: list[int],
        form: Form = "affine",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if form not in ("affine", "scale", "shift"):
            raise ValueError(f"BGU form must be affine, scale or shift, got {form!r}")
        self.form = form
        self.mlp = MLP(num_hubs * dim, hidden, 2 * dim if form == "affine" else dim, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, hubs: torch.Tensor) -> torch.Tensor:
        # x [B, n, d], hubs [B, h, d] -> [B, n, d]
        m = self.mlp(hubs.flatten(1)).unsqueeze(1)  # [B, 1, 2d] or [B, 1, d]
        if self.form == "affine":
            alpha, beta = m.chunk(2, dim=-1)
            update = x * torch.sigmoid(alpha) + beta
        elif self.form == "scale":
            update = x * torch.sigmoid(m)
        else:
            update = m.expand_as(x)
        return self.norm(x + update)
