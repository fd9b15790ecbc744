"""DIN's target attention: a weighted sum without softmax; an empty history pools to zeros."""

from __future__ import annotations

import torch

from infnet.models.layers.target_attention import TargetAttention


def test_target_attention_sums_without_softmax_and_pools_empty_rows_to_zero():
    torch.manual_seed(0)
    att = TargetAttention(4, 4).eval()
    q, k = torch.randn(2, 4), torch.randn(2, 1, 4)
    keys = torch.cat([k, k], dim=1)  # [B, 2, 4]: the same behaviour twice
    twice = att(q, keys, torch.tensor([[True, True], [True, True]]))
    once = att(q, keys, torch.tensor([[False, True], [False, True]]))
    torch.testing.assert_close(twice, 2 * once)  # a softmax would give twice == once
    none = att(q, keys, torch.tensor([[False, False], [True, True]]))
    assert torch.equal(none[0], torch.zeros(4))
    # Different query and key sizes: the query is projected first.
    assert TargetAttention(3, 4)(
        torch.randn(2, 3), keys, torch.ones(2, 2, dtype=torch.bool)
    ).shape == (2, 4)
