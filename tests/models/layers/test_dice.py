"""Dice (DIN eq. 9): p(s) * s + (1 - p(s)) * alpha * s with p the sigmoid of the normalised input."""

from __future__ import annotations

import torch
from torch import nn

from infnet.models.layers.dice import Dice, dice_mlp


def test_dice_in_eval_uses_its_running_statistics():
    dice = Dice(3).eval()
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.5, -1.0, 2.0]))
        dice.running_mean.copy_(torch.tensor([1.0, 0.0, -1.0]))
        dice.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    s = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    p = torch.sigmoid((s - dice.running_mean) / torch.sqrt(dice.running_var + dice.eps))
    torch.testing.assert_close(dice(s), p * s + (1 - p) * dice.alpha * s)


def test_dice_in_training_normalises_by_the_batch_and_moves_its_running_mean():
    torch.manual_seed(0)
    dice = Dice(2)
    s = torch.randn(64, 2) * 3 + 5
    dice(s)
    torch.testing.assert_close(dice.running_mean, 0.1 * s.mean(0))
    # alpha = 0 at start: a positive input passes at the fraction p
    p = torch.sigmoid((s - s.mean(0)) / torch.sqrt(s.var(0, unbiased=False) + dice.eps))
    torch.testing.assert_close(Dice(2)(s), p * s)


def test_dice_mlp_layers():
    kinds = [type(m) for m in dice_mlp(4, [8], 1, "prelu", dropout=0.1)]
    assert kinds == [nn.Linear, nn.PReLU, nn.Dropout, nn.Linear]
    assert [type(m) for m in dice_mlp(4, [8], None)] == [nn.Linear, Dice]
