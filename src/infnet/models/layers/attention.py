"""Multi-head cross attention with a key mask: INFNet's heterogeneous flow (and its full-attention ablation)."""

from __future__ import annotations

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
      The value bias passes through unchanged because attention rows sum to one.
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

    def forward(
        self,
        query: torch.Tensor,  # [B, q, d]
        key: torch.Tensor,  # [B, L, d]
        key_mask: torch.Tensor | None = None,  # bool [B, L], True = real token
        need_weights: bool = False,
        folded: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (output [B, q, d], head-averaged weights [B, q, L] or None)."""
        nq = query.shape[1]
        if folded is None:
            folded = 2 * nq * (self.num_heads - 1) <= self.dim
        # Rows with no real key attend uniformly over the (finite) padding, then are zeroed.
        has_key = None
        if key_mask is not None:
            has_key = key_mask.any(dim=1)  # [B]
            key_mask = key_mask | ~has_key.unsqueeze(1)
        run = self._folded if folded or need_weights else self._projected
        out, weights = run(query, key, key_mask, need_weights)
        if has_key is not None:
            keep = has_key.to(out.dtype).view(-1, 1, 1)
            out = out * keep
            weights = None if weights is None else weights * keep
        return out, weights

    def _folded(self, query, key, key_mask, need_weights):
        B, nq, d = query.shape
        H, dk = self.num_heads, self.head_dim
        q = self.q_proj(query).view(B, nq, H, dk)
        w_k = self.k_proj.weight.view(H, dk, d)
        q_in = torch.einsum("bqhe,hed->bqhd", q, w_k).reshape(B, nq * H, d) * dk**-0.5
        scores = torch.bmm(q_in, key.transpose(1, 2))  # [B, q*H, L]
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask.unsqueeze(1), float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        weights = attn.view(B, nq, H, -1).mean(2) if need_weights else None
        if self.training and self.dropout > 0:
            attn = nn.functional.dropout(attn, self.dropout)
        pooled = torch.bmm(attn, key).view(B, nq, H, d)  # A_h K, raw key space
        w_v = self.v_proj.weight.view(H, dk, d)
        heads = torch.einsum("bqhd,hed->bqhe", pooled, w_v).reshape(B, nq, d) + self.v_proj.bias
        return self.out_proj(heads), weights

    def _projected(self, query, key, key_mask, need_weights):
        B, nq, d = query.shape
        H, dk = self.num_heads, self.head_dim
        q = self.q_proj(query).view(B, nq, H, dk).transpose(1, 2)  # [B, H, q, dk]
        k = self.k_proj(key).view(B, -1, H, dk).transpose(1, 2)
        v = self.v_proj(key).view(B, -1, H, dk).transpose(1, 2)
        mask = None if key_mask is None else key_mask.view(B, 1, 1, -1)
        heads = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(heads.transpose(1, 2).reshape(B, nq, d)), None
