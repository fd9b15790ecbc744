"""INFNet v2's hubs before the first block: a few tokens per group that summarise it.

init "mlp" (the paper): H = Reshape(MLP(Flatten X)) for the categorical tokens, and per
behaviour the masked mean of MLP_b over the positions for the sequence tokens; "mean": the
group's masked mean token plus a learned offset per hub; "random": learned hubs, the same
for every sample.
"""

from __future__ import annotations

import torch
from torch import nn

from infnet.models.layers.mlp import MLP, pooled_mlp
from infnet.models.layers.pooling import masked_mean


class CategoricalHubs(nn.Module):
    """H_C [B, n_c, d] from C [B, M, d]."""

    def __init__(
        self, init: str, num_tokens: int, num_hubs: int, dim: int, hidden: list[int], dropout: float
    ) -> None:
        super().__init__()
        self.init, self.shape = init, (num_hubs, dim)
        if init == "mlp":
            self.mlp = MLP(num_tokens * dim, hidden, num_hubs * dim, dropout)
        else:  # mean: offsets from the mean token; random: the hubs themselves
            self.hubs = nn.Parameter(torch.randn(num_hubs, dim) * 0.1)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        if self.init == "mlp":
            return self.mlp(c.flatten(1)).view(
                -1, *self.shape
            )  # -1: an exported batch stays dynamic
        if self.init == "mean":
            return c.mean(1, keepdim=True) + self.hubs
        return self.hubs.expand(c.shape[0], -1, -1)


class SequenceHubs(nn.Module):
    """H_S [B, F * n_s, d] from the sequence tokens s [B, F, n, d] (mask [B, F, n])."""

    def __init__(
        self,
        init: str,
        behaviours: int,
        per_behaviour: int,
        dim: int,
        hidden: list[int],
        dropout: float,
    ) -> None:
        super().__init__()
        self.init, self.per_behaviour = init, per_behaviour
        if init == "mlp":  # MLP_b: one projection per behaviour
            self.mlps = nn.ModuleList(
                MLP(dim, hidden, per_behaviour * dim, dropout) for _ in range(behaviours)
            )
        else:
            self.hubs = nn.Parameter(torch.randn(behaviours, per_behaviour, dim) * 0.1)

    def forward(
        self,
        s: torch.Tensor,
        mask: torch.Tensor,
        distinct: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """distinct: (tokens [P, d], index [B, F, n]) with s = tokens[index]
        (embedding.sequence_tokens): the MLPs run on the P distinct tokens."""
        B, F, n, d = s.shape
        if self.init == "mlp":
            pooled = torch.stack(
                [
                    _mean_mlp(mlp, s[:, f], mask[:, f])
                    if distinct is None
                    else _mean_mlp(mlp, distinct[0], mask[:, f], distinct[1][:, f])
                    for f, mlp in enumerate(self.mlps)
                ],
                dim=1,
            )  # [B, F, n_s * d]
            return pooled.view(B, F * self.per_behaviour, d)
        if self.init == "mean":
            hubs = masked_mean(s, mask, dim=2).unsqueeze(2) + self.hubs  # [B, F, n_s, d]
        else:
            hubs = self.hubs.expand(B, -1, -1, -1)
        return hubs.flatten(1, 2)


def _mean_mlp(
    mlp: MLP, s: torch.Tensor, mask: torch.Tensor, index: torch.Tensor | None = None
) -> torch.Tensor:
    """masked_mean(mlp(s), mask) for s [B, n, d] (or distinct tokens [P, d] read through
    index [B, n]), mask [B, n] -> [B, out], the last layer run after the pooling
    (pooled_mlp); a history with no event gives zero, as the mean of nothing does."""
    m = mask.to(s.dtype).unsqueeze(1)  # [B, 1, n]
    return (pooled_mlp(mlp, s, m, index) / m.sum(-1, keepdim=True).clamp_min(1.0)).squeeze(1)
