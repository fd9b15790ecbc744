"""The Proxy Gated Unit: one channel gate per sample, broadcast over every token."""

from __future__ import annotations

import pytest
import torch

from infnet.models.layers.pgu import PGU


@pytest.mark.parametrize(
    ("gate", "scale", "shift"), [("sigmoid", 1, 0), ("2sigmoid", 2, 0), ("residual", 1, 1)]
)
def test_pgu_is_x_times_the_gate_of_the_flattened_proxies(gate, scale, shift):
    torch.manual_seed(0)
    pgu = PGU(num_proxies=3, dim=4, hidden=[8], gate=gate)
    x, proxies = torch.randn(2, 5, 4), torch.randn(2, 3, 4)
    g = shift + scale * torch.sigmoid(pgu.mlp(proxies.flatten(1)))  # [B, d]
    torch.testing.assert_close(pgu(x, proxies), x * g.unsqueeze(1))


def test_one_gate_per_sample_shared_by_its_tokens():
    torch.manual_seed(0)
    pgu = PGU(2, 4, [])
    x, proxies = torch.ones(1, 6, 4), torch.randn(1, 2, 4)
    out = pgu(x, proxies)
    assert torch.equal(out, out[:, :1].expand_as(out))  # equal tokens stay equal


def test_unknown_gate_lists_the_valid_ones():
    with pytest.raises(ValueError, match="sigmoid, 2sigmoid or residual"):
        PGU(2, 4, [], gate="tanh")
