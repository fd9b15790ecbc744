"""MLPs: the plain stack every model uses, one tower per task, and towers over per-task inputs."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Sequential):
    """Linear -> activation -> dropout, repeated; `out_dim` adds a final plain Linear."""

    def __init__(
        self,
        in_dim: int,
        hidden: list[int] | tuple[int, ...],
        out_dim: int | None = None,
        dropout: float = 0.0,
        activation: type[nn.Module] = nn.ReLU,
        batch_norm: bool = False,
    ) -> None:
        layers: list[nn.Module] = []
        dim = in_dim
        for h in hidden:
            layers.append(nn.Linear(dim, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(activation())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            dim = h
        if out_dim is not None:
            layers.append(nn.Linear(dim, out_dim))
            dim = out_dim
        super().__init__(*layers)
        self.out_dim = dim


def pooled_mlp(
    mlp: MLP, x: torch.Tensor, weights: torch.Tensor, index: torch.Tensor | None = None
) -> torch.Tensor:
    """sum_t w_kt MLP(x_t) for x [B, n, d], weights [B, k, n] -> [B, k, out].

    The MLP's last layer is linear, so it commutes with the weighted sum,
    sum_t w_t (W h_t + b) = W (sum_t w_t h_t) + b sum_t w_t: it runs on the k pooled
    hidden vectors instead of the n positions (the sequence hubs pool every position).

    With `index` [B, n], x [P, d] holds distinct tokens and position t of row b is
    x[index[b, t]]: the hidden layers run once per distinct token and the pooling is a
    weighted embedding bag over their outputs, never materialising [B, n, hidden]. Weights
    that need no gradient (masks, segments) bag only their non-zero positions: a padded or
    out-of-segment position adds exactly nothing (KuaiRand: 59% of positions are padding)."""
    *hidden, last = mlp
    h = x
    for layer in hidden:
        h = layer(h)  # [B, n, hidden], or [P, hidden] with index
    if index is None:
        pooled = torch.bmm(weights, h)  # [B, k, hidden]
    else:
        B, k, n = weights.shape
        bags, w = index.unsqueeze(1).expand(B, k, n).reshape(B * k, n), weights.reshape(B * k, n)
        offsets = None
        if not w.requires_grad:  # one 1-D run of the counted positions, a bag per offset
            keep = w != 0
            count = keep.sum(1)
            bags, w, offsets = bags[keep], w[keep], count.cumsum(0) - count
        pooled = nn.functional.embedding_bag(
            bags, h, offsets, per_sample_weights=w, mode="sum"
        ).view(B, k, -1)
    return nn.functional.linear(pooled, last.weight) + weights.sum(-1, keepdim=True) * last.bias


class TaskTowers(nn.Module):
    """One MLP tower per task over a shared representation: [B, D] -> [B, N_task].

    This is how a single-task interaction model runs multi-task (DESIGN.md section 5).
    """

    def __init__(
        self, in_dim: int, num_tasks: int, hidden: list[int], dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.towers = nn.ModuleList(MLP(in_dim, hidden, 1, dropout) for _ in range(num_tasks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([tower(x) for tower in self.towers], dim=-1)


def towers_over(towers: TaskTowers, per_task: list[torch.Tensor]) -> torch.Tensor:
    """Task k's tower on task k's representation: N_task x [B, D] -> [B, N_task]."""
    return torch.cat([tower(h) for tower, h in zip(towers.towers, per_task, strict=True)], dim=-1)
