"""ShrunkMeans: counts and shrunk means against numpy, the link per task kind, and the
leave-one-out statistic of training mode."""

from __future__ import annotations

import numpy as np
import torch
from tests.helpers import make_schema

from infnet.models.layers.shrunk_means import ShrunkMeans


def _tasks():
    schema = make_schema()  # click, like binary; watch regression
    return [
        t if t.kind == "binary" else t.model_copy(update={"mean": 2.0, "std": 4.0})
        for t in schema.tasks
    ]


def _data(seed=0, rows=400, vocab=12):
    g = np.random.default_rng(seed)
    codes = g.integers(1, vocab, rows)
    labels = np.stack(
        [g.random(rows) < 0.3, g.random(rows) < 0.1, 2 + 4 * g.standard_normal(rows)], 1
    )
    mask = g.random((rows, 3)) > 0.2  # some labels missing
    return codes, labels.astype(np.float32), mask


def _means(codes, labels, mask, m, vocab=12):
    y = np.where(mask, labels, 0.0).astype(np.float64)
    s = np.zeros((vocab, 3))
    n = np.zeros((vocab, 3))
    np.add.at(s, codes, y)
    np.add.at(n, codes, mask.astype(np.float64))
    prior = s.sum(0) / n.sum(0)
    return (s + m * prior) / (n + m), prior, s, n


def test_shrunk_means_and_links_match_numpy():
    codes, labels, mask = _data()
    layer = ShrunkMeans(12, _tasks(), strength=5.0)
    for lo in range(0, 400, 64):  # batches add up
        sl = slice(lo, lo + 64)
        layer.observe(
            torch.from_numpy(codes[sl]), torch.from_numpy(labels[sl]), torch.from_numpy(mask[sl])
        )
    means, prior, _, _ = _means(codes, labels, mask, 5.0)
    np.testing.assert_allclose(layer.prior().numpy(), prior, rtol=1e-5)
    q = torch.arange(12)
    got = layer(q).double().numpy()
    logit = lambda p: np.log(p) - np.log1p(-p)  # noqa: E731
    expected = np.stack(
        [
            logit(means[:, 0]) - logit(prior[0]),
            logit(means[:, 1]) - logit(prior[1]),
            (means[:, 2] - prior[2]) / 4.0,  # the regression link: standardised, less the prior's
        ],
        1,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # a code never seen reads the prior: no signal
    np.testing.assert_allclose(got[0], 0.0, atol=1e-6)


def test_leave_one_out_removes_the_rows_own_label():
    codes, labels, mask = _data(seed=1)
    layer = ShrunkMeans(12, _tasks(), strength=3.0)
    c, y, m = (torch.from_numpy(a) for a in (codes, labels, mask))
    layer.observe(c, y, m)
    _, prior, s, n = _means(codes, labels, mask, 3.0)
    own = layer(c[:20], (y[:20], m[:20])).double().numpy()
    y0 = np.where(mask[:20], labels[:20], 0.0)
    loo = (s[codes[:20]] - y0 + 3.0 * prior) / (n[codes[:20]] - mask[:20] + 3.0)
    expected_click = np.log(loo[:, 0] / (1 - loo[:, 0])) - np.log(prior[0] / (1 - prior[0]))
    np.testing.assert_allclose(own[:, 0], expected_click, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(own[:, 2], (loo[:, 2] - prior[2]) / 4.0, rtol=1e-4, atol=1e-5)
    # a row whose label is missing keeps the full statistic
    full = layer(c[:20]).double().numpy()
    missing = ~mask[:20, 1]
    np.testing.assert_allclose(own[missing, 1], full[missing, 1], rtol=1e-6)
