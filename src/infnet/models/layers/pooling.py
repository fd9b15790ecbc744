"""Masked pooling over padded positions."""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of x over `dim` where mask is True; zero where nothing is unmasked.

    x: [..., n, ..., d], mask broadcastable to x without its last axis.
    """
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(dim) / m.sum(dim).clamp_min(1.0)
