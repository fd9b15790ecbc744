"""DCNv2's cross layer and network: the equation, and every variant's shapes."""

from __future__ import annotations

import pytest
import torch

from infnet.models.layers.cross import CrossNetworkV2


def test_cross_layer_v2_equation():
    torch.manual_seed(0)
    net = CrossNetworkV2(6, num_layers=1)
    x0 = torch.randn(5, 6)
    w, b = net.layers[0].experts[0].weight, net.layers[0].bias
    torch.nn.init.normal_(b)
    torch.testing.assert_close(net(x0), x0 * (x0 @ w.T + b) + x0)


@pytest.mark.parametrize(("low_rank", "experts"), [(None, 1), (2, 1), (2, 3), (None, 2)])
def test_cross_network_v2_variants(low_rank, experts):
    net = CrossNetworkV2(6, num_layers=2, low_rank=low_rank, num_experts=experts)
    x0 = torch.randn(5, 6)
    assert net(x0).shape == (5, 6)
    # The cross term is x0 * (...): a zero input is a fixed point of every layer.
    assert torch.equal(net(torch.zeros(5, 6)), torch.zeros(5, 6))
    with pytest.raises(ValueError, match="num_experts"):
        CrossNetworkV2(6, 2, num_experts=0)
