"""masked_mean: padded positions never count, an empty row pools to zeros."""

from __future__ import annotations

import torch

from infnet.models.layers.pooling import masked_mean


def test_masked_positions_do_not_count_and_empty_rows_are_zero():
    x = torch.tensor(
        [[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 5.0], [6.0, 6.0], [7.0, 7.0]]]
    )
    mask = torch.tensor([[True, True, False], [False, False, False]])
    got = masked_mean(x, mask, dim=1)
    torch.testing.assert_close(got, torch.tensor([[2.0, 3.0], [0.0, 0.0]]))
    changed = x.clone()
    changed[0, 2] = -1e6  # a padded position
    torch.testing.assert_close(masked_mean(changed, mask, dim=1), got)
