"""CrossAttention against PyTorch's reference, its fully masked rows, several attentions
sharing one pass over a key set, and that pass's own backward against autograd's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infnet.models.layers.attention import (
    CrossAttention,
    _KeyPass,
    attend_folded,
    attend_shared,
)


@pytest.mark.parametrize("num_heads", [1, 2, 4])
@pytest.mark.parametrize("folded", [True, False])
def test_cross_attention_equals_pytorch_reference(num_heads: int, folded: bool) -> None:
    torch.manual_seed(0)
    d, B, q, L = 16, 5, 3, 11
    ca = CrossAttention(d, num_heads).eval()
    ref = nn.MultiheadAttention(d, num_heads, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ca.q_proj.weight, ca.k_proj.weight, ca.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ca.q_proj.bias, torch.zeros(d), ca.v_proj.bias]))
        ref.out_proj.weight.copy_(ca.out_proj.weight)
        ref.out_proj.bias.copy_(ca.out_proj.bias)
    query, key = torch.randn(B, q, d), torch.randn(B, L, d)
    mask = torch.rand(B, L) > 0.4
    mask[0] = False  # a row with no real key at all
    mask[1, 0] = True
    out, weights = ca(query, key, mask, need_weights=True, folded=folded)
    want, want_w = ref(query, key, key, key_padding_mask=~mask)
    torch.testing.assert_close(out[1:], want[1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weights[1:], want_w[1:], rtol=1e-5, atol=1e-6)
    assert torch.equal(out[0], torch.zeros(q, d)) and torch.equal(weights[0], torch.zeros(q, L))
    # and the same with scaled_dot_product_attention, unmasked, through the default path
    out, _ = ca(query, key)
    torch.testing.assert_close(out, ref(query, key, key)[0], rtol=1e-5, atol=1e-5)


def test_cross_attention_all_masked_rows_have_finite_gradients() -> None:
    ca = CrossAttention(8, 2)
    query = torch.randn(2, 3, 8, requires_grad=True)
    key = torch.randn(2, 5, 8, requires_grad=True)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    for folded in (True, False):
        out, _ = ca(query, key, mask, folded=folded)
        out.sum().backward()
        assert torch.equal(out, torch.zeros_like(out))
        assert torch.isfinite(query.grad).all() and torch.isfinite(key.grad).all()


def test_attentions_sharing_a_key_set_equal_their_separate_calls() -> None:
    # one pass over K for several flows (INFNet's blocks) against each flow on its own, in
    # the projected order (scaled_dot_product_attention), forward and backward
    torch.manual_seed(0)
    d, B, L = 16, 6, 13
    attns = [CrossAttention(d, 2) for _ in range(3)]
    queries = [torch.randn(B, q, d, requires_grad=True) for q in (1, 3, 4)]
    key = torch.randn(B, L, d, requires_grad=True)
    mask = torch.rand(B, L) > 0.5
    mask[0] = False
    shared = attend_folded(attns, queries, key, mask, need_weights=True)
    alone = [a(q, key, mask, folded=False) for a, q in zip(attns, queries, strict=True)]
    for (out, w), (want, _), q in zip(shared, alone, queries, strict=True):
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(w.sum(-1)[1:], torch.ones(B - 1, q.shape[1]))
        assert torch.equal(out[0], torch.zeros_like(out[0]))
    grads = torch.autograd.grad(sum(o.sum() for o, _ in shared), [key, *queries])
    want = torch.autograd.grad(sum(o.sum() for o, _ in alone), [key, *queries])
    for g, w in zip(grads, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_attentions_sharing_a_key_set_must_agree_on_dropout() -> None:
    attns = [CrossAttention(8, 2, dropout=0.1), CrossAttention(8, 2, dropout=0.2)]
    with pytest.raises(ValueError, match="differ in dropout"):
        attend_folded(attns, [torch.randn(2, 1, 8)] * 2, torch.randn(2, 5, 8))


def test_shared_pass_keeps_the_order_of_attentions_that_fold_and_that_do_not() -> None:
    torch.manual_seed(1)
    d, B, L = 16, 4, 9
    attns = [CrossAttention(d, 2) for _ in range(3)]
    queries = [torch.randn(B, q, d) for q in (2, 12, 3)]  # 12 queries do not fold (d = 16)
    assert [a.folds(q.shape[1]) for a, q in zip(attns, queries, strict=True)] == [True, False, True]
    key, mask = torch.randn(B, L, d), torch.rand(B, L) > 0.3
    got = attend_shared(attns, queries, key, mask)
    for (out, _), a, q in zip(got, attns, queries, strict=True):
        torch.testing.assert_close(out, a(q, key, mask, folded=False)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_key_pass_backward_equals_autograd_of_the_plain_ops(p: float) -> None:
    # _KeyPass's hand-written backward (bias mask, in-place softmax backward, one product for
    # the key's two gradients) against autograd through masked_fill, softmax, dropout, bmm
    torch.manual_seed(0)
    B, R, L, d = 4, 6, 9, 8
    q = torch.randn(B, R, d, dtype=torch.float64, requires_grad=True)
    key = torch.randn(B, L, d, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(B, L) > 0.3
    mask[1, 0] = True
    bias = torch.zeros(B, L, dtype=torch.float64).masked_fill_(~mask, float("-inf")).unsqueeze(1)
    upstream = torch.randn(B, R, d, dtype=torch.float64)

    torch.manual_seed(1)
    pooled, attn = _KeyPass.apply(q, key, bias, p)
    got = torch.autograd.grad((pooled * upstream).sum(), [q, key])

    torch.manual_seed(1)  # the same dropout draw: bernoulli_ on a tensor of A's shape
    scores = torch.bmm(q, key.transpose(1, 2)).masked_fill(~mask.unsqueeze(1), float("-inf"))
    a = torch.softmax(scores, -1)
    a_in = a * torch.empty_like(a).bernoulli_(1 - p).div_(1 - p) if p > 0 else a
    want_pooled = torch.bmm(a_in, key)
    want = torch.autograd.grad((want_pooled * upstream).sum(), [q, key])

    torch.testing.assert_close(pooled, want_pooled)
    torch.testing.assert_close(attn, a)
    assert not attn.requires_grad
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    if p > 0:  # the draw dropped some weights, so the test says something about dropout
        assert (a_in == 0).logical_and(a > 0).any()
