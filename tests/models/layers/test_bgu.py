"""The gated broadcast unit: LN(X + X * sigmoid(alpha) + beta) and its two reduced forms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infnet.models.layers.bgu import BGU


def test_the_broadcast_unit_is_the_papers_equation() -> None:
    torch.manual_seed(0)
    x, hubs = torch.randn(3, 5, 8), torch.randn(3, 2, 8)
    for form in ("affine", "scale", "shift"):
        unit = BGU(2, 8, [16], form)
        m = unit.mlp(hubs.flatten(1)).unsqueeze(1)
        alpha, beta = m.chunk(2, -1) if form == "affine" else (m, m)
        update = {
            "affine": x * torch.sigmoid(alpha) + beta,
            "scale": x * torch.sigmoid(alpha),
            "shift": beta.expand_as(x),
        }[form]
        want = nn.functional.layer_norm(x + update, (8,), unit.norm.weight, unit.norm.bias)
        torch.testing.assert_close(unit(x, hubs), want)


def test_one_modulation_per_sample_shared_by_its_tokens() -> None:
    torch.manual_seed(0)
    unit = BGU(2, 8, [16])
    x, hubs = torch.randn(1, 5, 8), torch.randn(1, 2, 8)
    same = unit(x[:, :1].expand(1, 5, 8), hubs)  # equal tokens stay equal: a per-channel map
    torch.testing.assert_close(same, same[:, :1].expand_as(same))
    with pytest.raises(ValueError, match="affine, scale or shift"):
        BGU(2, 8, [16], "gated")
