"""One INFNet v1 block over named token sets (the heterogeneous flows and the PGU gates), and
which flows and gates a block needs; models/infnet_v1.py stacks them (equations there)."""

from __future__ import annotations

import torch
from torch import nn

from infnet.models.infnet_config import INFNetConfig
from infnet.models.layers.attention import CrossAttention, attend_shared
from infnet.models.layers.pgu import PGU
from infnet.models.layers.pooling import masked_mean

Tokens = dict[str, torch.Tensor]  # name -> [B, n, d]
Masks = dict[str, torch.Tensor | None]  # name -> bool [B, n] (True = real) or None (all real)
Tables = dict[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (table [P, d], index [B, n])
# name -> (mask [U, n], seq_index [B]): its table holds U histories of n tokens (serving)
Histories = dict[str, tuple[torch.Tensor, torch.Tensor]]


class Block(nn.Module):
    """One INFNet block over named token sets.

    flows: query set -> key sets it reads by cross attention (summed);
    gates: token set -> proxy sets whose flattened concatenation gates it (PGU).
    With `full=True` the flows are replaced by one self-attention over all token sets.
    """

    def __init__(
        self,
        sizes: dict[str, int],  # proxy set -> number of tokens (PGU input width)
        flows: dict[str, list[str]],
        gates: dict[str, list[str]],
        config: INFNetConfig,
        full: bool = False,
    ) -> None:
        super().__init__()
        d, c = config.embedding_dim, config
        self.flows, self.gates, self.full = flows, gates, full
        self.residual, self.norm, self.pgu_hubs = c.residual, c.norm, c.pgu_hubs
        self.attn = nn.ModuleDict(
            {"all": CrossAttention(d, c.num_heads, c.dropout)}
            if full
            else {
                f"{q}_{k}": CrossAttention(d, c.num_heads, c.dropout)
                for q, ks in flows.items()
                for k in ks
            }
        )
        if c.norm == "none":
            normed = []
        elif full:
            normed = ["all"]
        elif c.norm == "pre":  # queries and keys
            normed = sorted({n for q, ks in flows.items() for n in [q, *ks]})
        else:  # post: the updated query sets
            normed = list(flows)
        self.norms = nn.ModuleDict({n: nn.LayerNorm(d) for n in normed})
        self.reads = sorted({n for q, ks in flows.items() for n in [q, *ks]})
        self.readers = {  # key set -> the query sets whose flows read it
            k: [q for q, ks in flows.items() if k in ks]
            for k in self.reads
            if any(k in ks for ks in flows.values())
        }
        self.pgu = nn.ModuleDict(
            {
                x: PGU(sum(sizes[p] for p in ps), d, c.gate_hidden, c.gate, c.dropout)
                for x, ps in gates.items()
            }
        )

    def forward(
        self,
        h: Tokens,
        mask: Masks,
        weights: dict[str, torch.Tensor] | None = None,
        tables: Tables | None = None,  # token sets that are h[n] = table[index]
        histories: Histories | None = None,  # tables that are a request's histories
    ) -> Tokens:
        if self.full:
            new = self._full(h, mask, weights)
        else:
            new = self._flows(h, mask, weights, tables or {}, histories or {})
        src = new if self.pgu_hubs == "post" or self.full else h
        out = dict(new)
        for x, ps in self.gates.items():
            out[x] = self.pgu[x](new[x], torch.cat([src[p] for p in ps], dim=1))
        return out

    def _flows(
        self, h: Tokens, mask: Masks, weights: dict | None, tables: Tables, histories: Histories
    ) -> Tokens:
        # each token set normalised once, however many flows read it; a gathered set as its
        # table, LN(table[i]) = LN(table)[i]
        normed = {n: self._norm(n, tables[n][0]) for n in self.reads if n in tables}
        x = {
            n: normed[n].index_select(0, tables[n][1].flatten()).view(*tables[n][1].shape, -1)
            if n in normed and self.norm == "pre"
            else self._norm(n, h[n])
            for n in self.reads
        }
        out: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        need = weights is not None
        for k, qs in self.readers.items():  # the flows reading key set k, in one pass
            # A query set equal in every row (the task tokens entering block 1: an expanded
            # parameter) over a request's history reads it once per history, not per row.
            once = [q for q in qs if k in histories and h[q].stride(0) == 0]
            rows = [q for q in qs if q not in once]
            done = attend_shared(
                [self.attn[f"{q}_{k}"] for q in rows], [x[q] for q in rows], x[k], mask[k], need
            )
            out |= {f"{q}_{k}": r for q, r in zip(rows, done, strict=True)}
            if once:
                m, seq_index = histories[k]  # [U, n], [B]
                keys = normed[k].view(*m.shape, -1)  # [U, n, d]
                queries = [self._norm(q, h[q][:1]).expand(m.shape[0], -1, -1) for q in once]
                done = attend_shared([self.attn[f"{q}_{k}"] for q in once], queries, keys, m, need)
                for q, (o, w) in zip(once, done, strict=True):
                    w = None if w is None else w.index_select(0, seq_index)
                    out[f"{q}_{k}"] = (o.index_select(0, seq_index), w)
        if weights is not None:
            weights |= {flow: w for flow, (_, w) in out.items()}
        new = dict(h)
        for q, keys in self.flows.items():
            update = sum(out[f"{q}_{k}"][0] for k in keys)
            y = h[q] + update if self.residual else update
            new[q] = self.norms[q](y) if self.norm == "post" else y
        return new

    def _norm(self, n: str, x: torch.Tensor) -> torch.Tensor:
        """Token set n as its flows read it: layer-normed under norm="pre"."""
        return self.norms[n](x) if self.norm == "pre" else x

    def _full(self, h: Tokens, mask: Masks, weights: dict | None) -> Tokens:
        names = list(h)
        sizes = [h[n].shape[1] for n in names]
        x = torch.cat([h[n] for n in names], dim=1)  # [B, M + L + N_task, d]
        m = torch.cat([real(h[n], mask[n]) for n in names], dim=1)
        xin = self.norms["all"](x) if self.norm == "pre" else x
        update, w = self.attn["all"](xin, xin, m, weights is not None)
        if weights is not None:
            weights["all"] = w
        x = x + update if self.residual else update
        if self.norm == "post":
            x = self.norms["all"](x)
        new = dict(zip(names, x.split(sizes, dim=1), strict=True))
        # The PGU's "proxy" of a type without proxies: the masked mean of its tokens.
        for n in names:
            new[f"{n}p"] = masked_mean(new[n], real(new[n], mask[n]), dim=1).unsqueeze(1)
        return new


def live(
    flows: dict[str, list[str]],
    gates: dict[str, list[str]],
    needed: set[str],
    pre: bool,
    full: list[str] | None,
) -> tuple[dict[str, list[str]], dict[str, list[str]], set[str]]:
    """The flows and gates of a block whose outputs `needed` are read, and the sets it reads.
    pre: the PGU reads the proxies entering the block; full: the token sets of a block that
    attends over all of them (None: a proxy block)."""
    g = {x: ps for x, ps in gates.items() if x in needed}
    if full is not None:
        return flows, g, set(full)
    gate_proxies = {p for ps in g.values() for p in ps}
    computed = needed | (set() if pre else gate_proxies)
    f = {q: ks for q, ks in flows.items() if q in computed}
    reads = computed | {k for ks in f.values() for k in ks} | (gate_proxies if pre else set())
    return f, g, reads


def real(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
