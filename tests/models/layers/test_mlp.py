"""MLP and task towers: the layer stack, one output per task, task k's tower on task k's input;
an MLP pooled over positions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infnet.models.layers.mlp import MLP, TaskTowers, pooled_mlp, towers_over


def test_mlp_is_linear_relu_repeated_then_a_plain_linear():
    mlp = MLP(4, [8, 6], out_dim=2, dropout=0.5, batch_norm=True)
    kinds = [type(m) for m in mlp]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout] * 2 + [nn.Linear]
    assert mlp.out_dim == 2 and MLP(4, [8, 6]).out_dim == 6


def test_task_towers_give_one_column_per_task_and_towers_over_reads_its_own_input():
    torch.manual_seed(0)
    towers = TaskTowers(5, 3, [4])
    x = torch.randn(7, 5)
    out = towers(x)
    assert out.shape == (7, 3)
    for k, tower in enumerate(towers.towers):
        torch.testing.assert_close(out[:, k : k + 1], tower(x))
    per_task = [torch.randn(7, 5) for _ in range(3)]
    got = towers_over(towers, per_task)
    for k in range(3):
        torch.testing.assert_close(got[:, k : k + 1], towers.towers[k](per_task[k]))


def test_pooled_mlp_is_the_weighted_sum_of_the_mlp_over_positions() -> None:
    torch.manual_seed(0)
    mlp = MLP(8, [16, 12], 4)
    x, weights = torch.randn(5, 7, 8), torch.rand(5, 3, 7)
    weights[0] = 0.0  # nothing pooled: zero, not the last layer's bias
    want = torch.einsum("bkn,bno->bko", weights, mlp(x))
    torch.testing.assert_close(pooled_mlp(mlp, x, weights), want, rtol=1e-5, atol=1e-6)
    assert torch.equal(pooled_mlp(mlp, x, weights)[0], torch.zeros(3, 4))


@pytest.mark.parametrize("learned", [False, True])
def test_pooled_mlp_over_distinct_tokens_equals_it_over_positions(learned: bool) -> None:
    # zero weights (padding, other segments, a row with none) are left out of the bags only
    # where the weights need no gradient; outputs and gradients equal the per-position path's
    torch.manual_seed(0)
    mlp = MLP(8, [16], 4)
    table, index = torch.randn(6, 8, requires_grad=True), torch.randint(0, 6, (5, 7))
    weights = torch.rand(5, 2, 7) * (torch.rand(5, 2, 7) > 0.5)
    weights[3] = 0.0  # a row with no position at all
    weights.requires_grad_(learned)
    inputs = [table, *mlp.parameters(), *([weights] if learned else [])]
    got = pooled_mlp(mlp, table, weights, index)
    want = pooled_mlp(mlp, table[index], weights)  # [5, 2, 4]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    upstream = torch.randn_like(want)
    grads = torch.autograd.grad((got * upstream).sum(), inputs)
    wanted = torch.autograd.grad((want * upstream).sum(), inputs)
    for g, w in zip(grads, wanted, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    if learned:  # a zero weight's gradient is its position's output, not zero
        assert grads[-1][weights == 0].abs().sum() > 0
