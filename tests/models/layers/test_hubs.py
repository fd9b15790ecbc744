"""INFNet v2's hubs: shapes, the masked mean over real positions, and each init's form."""

from __future__ import annotations

import torch

from infnet.models.layers.hubs import CategoricalHubs, SequenceHubs
from infnet.models.layers.pooling import masked_mean


def test_categorical_hubs_by_init() -> None:
    torch.manual_seed(0)
    c = torch.randn(4, 5, 8)  # [B, M, d]
    mlp = CategoricalHubs("mlp", 5, 3, 8, [16], 0.0)
    torch.testing.assert_close(mlp(c), mlp.mlp(c.flatten(1)).view(4, 3, 8))
    mean = CategoricalHubs("mean", 5, 3, 8, [16], 0.0)
    torch.testing.assert_close(mean(c), c.mean(1, keepdim=True) + mean.hubs)
    random = CategoricalHubs("random", 5, 3, 8, [16], 0.0)
    assert torch.equal(random(c), random.hubs.expand(4, 3, 8))


def test_sequence_hubs_read_only_real_positions() -> None:
    torch.manual_seed(0)
    s, mask = torch.randn(3, 2, 6, 8), torch.rand(3, 2, 6) > 0.4  # [B, F, n, d], [B, F, n]
    noisy = torch.where(mask.unsqueeze(-1), s, torch.randn_like(s))
    for init in ("mlp", "mean"):
        hubs = SequenceHubs(init, 2, 4, 8, [16], 0.0)
        out = hubs(s, mask)
        assert out.shape == (3, 2 * 4, 8)  # F * n_s hubs
        torch.testing.assert_close(hubs(noisy, mask), out)  # padding never read
    mlp = SequenceHubs("mlp", 2, 4, 8, [16], 0.0)
    want = masked_mean(mlp.mlps[1](s[:, 1]), mask[:, 1], dim=1).view(3, 4, 8)
    torch.testing.assert_close(mlp(s, mask)[:, 4:], want)  # behaviour 1's hubs: its own MLP
