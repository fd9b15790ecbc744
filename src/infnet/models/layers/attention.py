"""Multi-head cross attention with a key mask: INFNet's heterogeneous flow (and its full-attention ablation)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class CrossAttention(nn.Module):
    """Multi-head cross attention CA(Q, K, K) = softmax(Q W_q (K W_k)^T / sqrt(d_k)) K W_v, then W_o.

    Keys and values are the same token set (every flow of INFNet reads CA(X, Y, Y)).
    `key_mask` [B, L] is True where a key is real; a query row whose keys are all padding
    yields exact zeros (not NaN), forward and backward.

    Two exact evaluation orders (same weights, same result up to float rounding):
    - folded (few queries over many keys): the key projection is folded into the queries,
      q'_h = (Q W_q)_h W_k,h  ([B, q, H, d], input space), so scores_h = q'_h K^T reads the
      raw keys; likewise the value projection is applied after pooling the raw keys,
      (A_h K) W_v,h^T. Cost O(q * H * L * d) instead of O(L * d^2) for projecting L keys.
      The value bias passes through unchanged because attention rows sum to one. W_q with W_k
      and W_v with W_o are combined into one weight each (`query_key`, `value_out`), made from
      the parameters at every call, so a flow costs one product on each side of the keys.
    - projected (many queries, e.g. full self-attention): the usual K W_k, K W_v and
      `scaled_dot_product_attention`.
    By multiplication count the folded order wins when q * (H - 1) < d; skinny batched
    matmuls run below the speed of one large projection GEMM, and on CPU (d=16, H=2,
    L=256..4096) the measured crossover was near q = 8, so it is used when
    2 * q * (H - 1) <= d (every flow of INFNet at its defaults).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding_dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)  # a key bias cancels in the softmax
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def query_key(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W_qk [d, H d], b_qk [H d]: x W_qk + b_qk = ((x W_q^T + b_q)_h W_k,h / sqrt(d_k))_h, the
        queries folded into the key space, every head in one product."""
        H, dk, d = self.num_heads, self.head_dim, self.dim
        w_q = self.q_proj.weight.view(H, dk, d) * dk**-0.5
        w_k = self.k_proj.weight.view(H, dk, d)
        w = torch.einsum("hei,hed->ihd", w_q, w_k).reshape(d, H * d)
        b = torch.einsum("he,hed->hd", self.q_proj.bias.view(H, dk) * dk**-0.5, w_k)
        return w, b.reshape(H * d)

    def value_out(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W_vo [H d, d], b_vo [d]: [p_h]_h W_vo + b_vo = W_o ([p_h W_v,h^T]_h + b_v) + b_o for
        pooled raw keys p_h (attention rows sum to one, so b_v passes unchanged)."""
        H, dk, d = self.num_heads, self.head_dim, self.dim
        w_v = self.v_proj.weight.view(H, dk, d)
        w_o = self.out_proj.weight.view(d, H, dk)
        w = torch.einsum("hed,ohe->hdo", w_v, w_o).reshape(H * d, d)
        return w, self.out_proj(self.v_proj.bias)

    def folds(self, num_queries: int) -> bool:
        return 2 * num_queries * (self.num_heads - 1) <= self.dim

    def forward(
        self,
        query: torch.Tensor,  # [B, q, d]
        key: torch.Tensor,  # [B, L, d]
        key_mask: torch.Tensor | None = None,  # bool [B, L], True = real token
        need_weights: bool = False,
        folded: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (output [B, q, d], head-averaged weights [B, q, L] or None)."""
        if folded is None:
            folded = self.folds(query.shape[1])
        if folded or need_weights:
            return attend_folded([self], [query], key, key_mask, need_weights)[0]
        key_mask, keep = _real_keys(key_mask, key.dtype)
        B, nq, d = query.shape
        H, dk = self.num_heads, self.head_dim
        q = self.q_proj(query).view(B, nq, H, dk).transpose(1, 2)  # [B, H, q, dk]
        k = self.k_proj(key).view(B, -1, H, dk).transpose(1, 2)
        v = self.v_proj(key).view(B, -1, H, dk).transpose(1, 2)
        mask = None if key_mask is None else key_mask.view(B, 1, 1, -1)
        heads = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        out = self.out_proj(heads.transpose(1, 2).reshape(B, nq, d))
        return (out if keep is None else out * keep), None


def attend_folded(
    attns: Sequence[CrossAttention],
    queries: Sequence[torch.Tensor],  # [B, q_i, d] each
    key: torch.Tensor,  # [B, L, d]
    key_mask: torch.Tensor | None = None,  # bool [B, L], True = real token
    need_weights: bool = False,
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """CA_i(Q_i, K, K) for every i in the folded order, over one key set read once.

    Each attention's queries are folded into the key space with its own weights, so the
    queries of all of them stack into one [B, sum_i q_i H, d] matrix: one score product,
    one softmax and one pooling product over K serve every flow that reads K. Each row
    of the softmax is one (flow, query, head), so the result is each CA_i's own.
    """
    if not attns:
        return []
    key_mask, keep = _real_keys(key_mask, key.dtype)
    B, _, d = key.shape
    dropout = {a.dropout for a in attns if a.training}
    if len(dropout) > 1:
        raise ValueError(f"attentions sharing a key set differ in dropout: {sorted(dropout)}")
    folded = []
    for a, query in zip(attns, queries, strict=True):
        w_qk, b_qk = a.query_key()
        folded.append(torch.addmm(b_qk, query.flatten(0, 1), w_qk).view(B, -1, d))
    sizes = [q.shape[1] for q in folded]
    stacked = torch.cat(folded, 1) if len(folded) > 1 else folded[0]  # [B, sum q_i H, d]
    bias = None
    if key_mask is not None:  # 0 for a real key, -inf for padding: [B, 1, L]
        bias = torch.zeros(key_mask.shape, dtype=stacked.dtype, device=key.device)
        bias = bias.masked_fill_(~key_mask, float("-inf")).unsqueeze(1)
    p = dropout.pop() if dropout else 0.0
    pooled, attn = _key_pass(stacked, key, bias, p)  # A_h K, raw key space: [B, sum q_i H, d]
    results = []
    for a, query, part, w in zip(
        attns, queries, pooled.split(sizes, 1), attn.split(sizes, 1), strict=True
    ):
        nq, H = query.shape[1], a.num_heads
        w_vo, b_vo = a.value_out()
        out = torch.addmm(b_vo, part.reshape(B * nq, H * d), w_vo).view(B, nq, d)
        weights = w.view(B, nq, H, -1).mean(2) if need_weights else None
        if keep is not None:
            out = out * keep
            weights = None if weights is None else weights * keep
        results.append((out, weights))
    return results


class _KeyPass(torch.autograd.Function):
    """(A K, A) with A = softmax(Q K^T + bias) (dropout p on A before the pooling): one pass over
    the keys forward and one backward.

    Autograd's own graph of these ops copies the score tensor for the mask, keeps the scores
    and the softmax output, and sums the key's two gradients (from the score product and from
    the pooling) in a separate pass. Here the mask is an additive bias, the softmax backward
    runs in place with its row sums read off the pooled keys, and the key's second gradient
    is added by the product that makes it: the same values to float rounding, with fewer
    passes over the largest tensors of the step."""

    @staticmethod
    def forward(ctx, q, key, bias, p):
        pooled, attn, attn_in = _pool(q, key, bias, p)
        ctx.p = p
        ctx.save_for_backward(q, key, attn, attn_in, pooled)
        ctx.mark_non_differentiable(attn)  # the weights are read for display, under no_grad
        ctx.set_materialize_grads(False)  # so no zero gradient of A is allocated
        return pooled, attn

    @staticmethod
    def backward(ctx, d_pooled, _d_attn):
        q, key, attn, attn_in, pooled = ctx.saved_tensors
        d_a = torch.bmm(d_pooled, key.transpose(1, 2))  # [B, R, L]
        if ctx.p > 0:  # a dropped weight (0 in attn_in) passes no gradient
            d_a = torch.where(attn_in != 0, d_a / (1 - ctx.p), 0.0)
        # softmax backward: dS = A * (dA - <A, dA>), in place. <A, dA> = <A K, dP>: the rows of
        # the pooled keys against their gradients, d wide instead of L (dropout included, since
        # dA carries the same mask and scale as the weights that pooled K)
        d_s = d_a.sub_(torch.linalg.vecdot(pooled, d_pooled).unsqueeze(-1)).mul_(attn)
        d_q = torch.bmm(d_s, key)
        # in place: the out-of-place baddbmm would first copy the [B, L, d] product it adds to
        d_key = torch.bmm(attn_in.transpose(1, 2), d_pooled).baddbmm_(d_s.transpose(1, 2), q)
        return d_q, d_key, None, None


def _pool(
    q: torch.Tensor,  # [B, R, d]
    key: torch.Tensor,  # [B, L, d]
    bias: torch.Tensor | None,  # [B, 1, L]
    p: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A K [B, R, d], A [B, R, L], A after dropout) with A = softmax(Q K^T + bias)."""
    kt = key.transpose(1, 2)
    scores = torch.bmm(q, kt) if bias is None else torch.baddbmm(bias, q, kt)
    attn = torch.softmax(scores, dim=-1)
    attn_in = attn * torch.empty_like(attn).bernoulli_(1 - p).div_(1 - p) if p > 0 else attn
    return torch.bmm(attn_in, key), attn, attn_in


def _key_pass(
    q: torch.Tensor, key: torch.Tensor, bias: torch.Tensor | None, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    # Without gradients (evaluation, serving) and under a tracer (ONNX export, whose graph of an
    # autograd.Function is wrong) the plain ops serve; in training, _KeyPass's one-pass backward.
    tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    if torch.is_grad_enabled() and (q.requires_grad or key.requires_grad) and not tracing:
        return _KeyPass.apply(q, key, bias, p)
    return _pool(q, key, bias, p)[:2]


def attend_shared(
    attns: Sequence[CrossAttention],
    queries: Sequence[torch.Tensor],  # [B, q_i, d] each
    key: torch.Tensor,  # [B, L, d]
    key_mask: torch.Tensor | None = None,
    need_weights: bool = False,
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """CA_i(Q_i, K, K) for every i, in order: the attentions of few queries (those that
    fold) share one pass over K (attend_folded); those of many project K their own way."""
    folds = [a.folds(q.shape[1]) for a, q in zip(attns, queries, strict=True)]
    shared = iter(
        attend_folded(
            [a for a, f in zip(attns, folds, strict=True) if f],
            [q for q, f in zip(queries, folds, strict=True) if f],
            key,
            key_mask,
            need_weights,
        )
    )
    return [
        next(shared) if f else a(q, key, key_mask, need_weights)
        for a, q, f in zip(attns, queries, folds, strict=True)
    ]


def _real_keys(
    key_mask: torch.Tensor | None, dtype: torch.dtype
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Rows with no real key attend uniformly over the (finite) padding and are then zeroed:
    (the mask with those rows all True, the [B, 1, 1] float factor that zeroes them)."""
    if key_mask is None:
        return None, None
    has_key = key_mask.any(dim=1)  # [B]
    return key_mask | ~has_key.unsqueeze(1), has_key.to(dtype).view(-1, 1, 1)
