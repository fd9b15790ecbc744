"""DIN's target attention: the candidate queries a behaviour history (DIN, DIEN, production)."""

from __future__ import annotations

import torch
from torch import nn

from infnet.models.layers.dice import Activation, dice_mlp


class TargetAttention(nn.Module):
    """DIN's activation unit and weighted-sum pooling (eq. 3), without softmax.

    forward(query [B, d_q], keys [B, n, d_k], mask [B, n]) -> [B, d_k]; a row whose mask is
    all False pools to zeros. When d_q != d_k the query is first mapped to d_k by a linear
    layer, so that q - k and q * k are defined.
    """

    def __init__(
        self,
        query_dim: int,
        key_dim: int,
        hidden: list[int] | tuple[int, ...] = (64, 32),
        activation: Activation = "dice",
    ) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_dim, key_dim) if query_dim != key_dim else nn.Identity()
        self.unit = dice_mlp(4 * key_dim, hidden, 1, activation)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.query_proj(query)
        rows, _ = mask.nonzero(as_tuple=True)
        # The unit runs on valid positions only: padding never enters Dice's statistics.
        k = keys[mask]  # [N_valid, d_k]
        qv = q[rows]
        a = self.unit(torch.cat([qv, k, qv - k, qv * k], dim=-1)).squeeze(-1)  # [N_valid]
        weights = keys.new_zeros(mask.shape).masked_scatter(mask, a)  # [B, n]
        return (weights.unsqueeze(-1) * keys * mask.unsqueeze(-1)).sum(1)
