"""The first-order term: w0 + sum of per-field weights (+ pooled history ids), zero at start."""

from __future__ import annotations

import torch
from tests.helpers import make_batch, make_schema

from infnet.models.layers.linear import LinearTerm


def test_starts_at_zero_and_sums_field_weights():
    schema = make_schema()
    term = LinearTerm(schema, 2, use_history=False)
    batch = make_batch(schema, batch_size=4)
    assert torch.equal(term(batch), torch.zeros(4, 2))
    with torch.no_grad():
        for table in term.fields:
            table.weight.fill_(1.0)
        term.bias.fill_(0.5)
    # every categorical token contributes 1 (PAD rows are zero rows of the table)
    assert torch.all(term(batch) >= 0.5)
