"""Shared embedding of categorical fields and sequence tokens.

One table per categorical token: an ordinary field, or a bag (the K slot columns of a
multi-valued feature such as genres, which share one vocabulary). A bag's token is the
mean of its present values' embeddings,

    e_bag = sum_{k: x_k != PAD} E[x_k] / #{k: x_k != PAD}           (zero when all PAD)

so it does not depend on the order of the values. A sequence position's side-info field
(video id, author id, tag) is looked up in the table of the target item's field of the same
name, so a clicked video and the candidate video live in one space; a bag among the side
fields (a video's genres) is one side token of each position, its values' mean, as it is
one token of the candidate.

Time-aware sequence tokens (`time_aware`, an option of every sequence model): each
position also carries its order and its age,

    s_t,k = e_k(item_t) + p_t + r_t        p: learned per position (most recent last),
                                           r: learned per log2 time-gap bucket (Batch.seq_gap)

added to every side field's embedding, so a model's widths do not change; padded positions
stay zero.
"""

from __future__ import annotations

from itertools import accumulate

import torch
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import PAD, Schema
from infnet.data.sequences import GAP_BUCKETS
from infnet.models.layers.pooling import masked_mean


def token_tables(schema: Schema, dim: int) -> nn.ModuleList:
    """One [vocab, dim] table per categorical token (schema.token_columns)."""
    return nn.ModuleList(
        nn.Embedding(schema.fields[cols[0]].vocab_size, dim, padding_idx=PAD)
        for cols in schema.token_columns
    )


Tokens = list[tuple[list[int], bool]]  # per categorical token: its columns, is it a bag


def tokens(schema: Schema) -> Tokens:
    return [(cols, schema.fields[cols[0]].bag is not None) for cols in schema.token_columns]


def lookup_tokens(tables: nn.ModuleList, toks: Tokens, categorical: torch.Tensor) -> torch.Tensor:
    """categorical int64 [B, M] -> [B, M_tok, dim]: a field's embedding, a bag's masked mean.

    The single-field tokens are one lookup in their tables' concatenation: one gather forward
    and one scatter backward instead of one of each per table (KuaiRand has 92 tables), and
    one Gather in an exported graph. PAD reads an appended zero row, so no table's PAD row
    gets a gradient, as padding_idx=PAD has it."""
    single = [t for t, (_, bag) in enumerate(toks) if not bag]
    out: list[torch.Tensor] = []
    if single:
        weights = [tables[t].weight for t in single]
        sizes = [w.shape[0] for w in weights]
        table = torch.cat([*weights, weights[0].new_zeros(1, weights[0].shape[1])])
        offsets = torch.tensor(
            list(accumulate(sizes[:-1], initial=0)), device=categorical.device
        )  # [n_single]: each table's first row in `table`
        ids = categorical[:, [toks[t][0][0] for t in single]]  # [B, n_single]
        e = nn.functional.embedding(torch.where(ids == PAD, len(table) - 1, ids + offsets), table)
        if len(single) == len(toks):
            return e  # [B, M_tok, dim]
        out = list(e.unbind(1))
    for t, (cols, bag) in enumerate(toks):
        if bag:
            ids = categorical[:, cols]  # [B, K]
            out.insert(t, masked_mean(tables[t](ids), ids != PAD, dim=1))
    return torch.stack(out, dim=1)


class FeatureEmbedding(nn.Module):
    def __init__(self, schema: Schema, dim: int, time_aware: bool = False, *, std: float) -> None:
        super().__init__()
        self.dim = dim
        self.tokens = tokens(schema)
        self.tables = token_tables(schema, dim)
        for table in self.tables:
            nn.init.normal_(table.weight, std=std)  # ModelConfig.embedding_std
            with torch.no_grad():
                table.weight[PAD].zero_()
        # table of each column of Batch.categorical (a bag's slots share one)
        self.column_table = [t for t, cols in enumerate(schema.token_columns) for _ in cols]
        # columns of the target item's side fields (what the sequence positions carry)
        self.side_field_index = (
            [schema.field_index(name) for name in schema.sequences.side_fields]
            if schema.sequences is not None
            else []
        )
        self.side_tokens = schema.side_tokens  # side columns k behind each side token
        self.num_side_tokens = len(self.side_tokens)  # K_tok
        self.time_aware = time_aware
        if time_aware:
            seq = schema.sequences
            if seq is None:
                raise ValueError("time_aware needs behaviour sequences; the schema has none")
            if seq.prebuilt:
                raise ValueError(
                    f"time_aware: behaviour {seq.prebuilt[0]!r} comes from a pre-built history "
                    "column, whose events carry no times; set time_aware=false"
                )
            self.positions = nn.Embedding(seq.max_len, dim)  # p_t
            self.gaps = nn.Embedding(GAP_BUCKETS, dim, padding_idx=0)  # r_t
            nn.init.normal_(self.positions.weight, std=std)
            nn.init.normal_(self.gaps.weight, std=std)
            with torch.no_grad():
                self.gaps.weight[0].zero_()

    def categorical(self, batch: Batch) -> torch.Tensor:  # [B, M_tok, d]
        return lookup_tokens(self.tables, self.tokens, batch.categorical)

    def columns(self, batch: Batch, index: list[int]) -> torch.Tensor:  # [B, len(index), d]
        """The embeddings of single columns of Batch.categorical (a bag slot on its own)."""
        return torch.stack(
            [self.tables[self.column_table[i]](batch.categorical[:, i]) for i in index], dim=1
        )

    def _side(self, e: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """e [..., K, d] of ids [..., K] -> [..., K_tok, d]: each bag's slots pooled."""
        if self.num_side_tokens == e.shape[-2]:
            return e  # no bag among the side fields
        return torch.stack(
            [
                e[..., g[0], :]
                if len(g) == 1
                else masked_mean(e[..., g, :], ids[..., g] != PAD, dim=-2)
                for g in self.side_tokens
            ],
            dim=-2,
        )

    def distinct_sequence(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's sequence positions as their distinct (behaviour, side ids), each embedded
        once: (side tokens [P, K_tok, d], behaviour [P], index [B, F, n] of each position's row).

        Without time-aware terms a position's token is a function of its behaviour and item
        alone, and the rows of a batch share most of their items (KuaiRand: 614,400 positions
        of a 4,096-row batch, about 12,000 distinct), so a model computes what is per-token on
        the P rows and gathers (`index`) what is per-position."""
        if self.time_aware:
            raise ValueError("time-aware tokens differ by position; use sequence()")
        ids = batch.seq_ids  # [B, F, n, K]
        B, F, n, K = ids.shape
        behaviour = torch.arange(F, device=ids.device).view(1, F, 1).expand(B, F, n)
        sizes = [self.tables[self.column_table[i]].num_embeddings for i in self.side_field_index]
        index, first = distinct_rows([behaviour, *ids.unbind(-1)], [F, *sizes])
        ids_p = ids.reshape(-1, K)[first]  # [P, K]
        return self._side_tokens(ids_p), behaviour.reshape(-1)[first], index.view(B, F, n)

    def _side_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Side-field ids [..., K] of sequence positions -> their side tokens [..., K_tok, d]."""
        e = torch.stack(
            [
                self.tables[self.column_table[i]](ids[..., k])
                for k, i in enumerate(self.side_field_index)
            ],
            dim=-2,
        )
        return self._side(e, ids)

    def target(self, batch: Batch) -> torch.Tensor:  # [B, K_tok, d]
        """The candidate item's side tokens, as a sequence position carries them."""
        ids = batch.categorical[:, self.side_field_index]
        return self._side(self.columns(batch, self.side_field_index), ids)

    def sequence(self, batch: Batch) -> torch.Tensor:  # [B, F, n, K_tok, d]
        e = self._side_tokens(batch.seq_ids)
        if not self.time_aware:
            return e
        when = self.positions.weight + self.gaps(batch.seq_gap)  # [B, F, n, d]
        return e + (when * batch.seq_mask.unsqueeze(-1)).unsqueeze(-2)

    def pooled_sequence(self, batch: Batch) -> torch.Tensor:  # [B, F, K_tok * d]
        """Masked mean over positions of each behaviour's side-info embeddings: how models
        without sequence modelling of their own read the histories (FuxiCTR does the same)."""
        s = self.sequence(batch).flatten(-2)  # [B, F, n, K_tok*d]
        return masked_mean(s, batch.seq_mask, dim=2)

    def flat_input(self, batch: Batch) -> torch.Tensor:  # [B, M_tok*d + F*K*d]
        """Token embeddings and pooled histories, concatenated: the input of MLP-style models."""
        parts = [self.categorical(batch).flatten(1)]
        if batch.seq_ids.shape[1]:
            parts.append(self.pooled_sequence(batch).flatten(1))
        return torch.cat(parts, dim=1)

    def flat_dim(self, schema: Schema) -> int:
        seq = schema.num_behaviours * schema.num_side_tokens
        return (schema.num_categorical_tokens + seq) * self.dim


def target_query(embedding: FeatureEmbedding, batch: Batch) -> torch.Tensor:
    """The candidate item's side-token embeddings, concatenated: [B, K_tok*d]."""
    return embedding.target(batch).flatten(1)


def field_tokens(embedding: FeatureEmbedding, batch: Batch) -> torch.Tensor:  # [B, M_tok + F*K, d]
    """Field embeddings plus one mean-pooled token per (behaviour, side token)."""
    tokens = embedding.categorical(batch)
    if batch.seq_ids.shape[1]:
        pooled = embedding.pooled_sequence(batch)  # [B, F, K*d]
        tokens = torch.cat([tokens, pooled.unflatten(2, (-1, embedding.dim)).flatten(1, 2)], dim=1)
    return tokens


def num_field_tokens(schema: Schema) -> int:
    seq = schema.num_behaviours * schema.num_side_tokens
    return schema.num_categorical_tokens + seq


def pooled_history_inputs(schema: Schema) -> list[str]:
    """What a model that reads `flat_input` does not see of the behaviour histories."""
    if schema.sequences is None:
        return []
    return [
        f"order and per-position detail of the {b!r} history (read only as a masked mean of "
        f"its {', '.join(schema.sequences.side_fields)} embeddings)"
        for b in schema.sequences.behaviours
    ]


Distinct = tuple[torch.Tensor, torch.Tensor]  # tokens [P, d], index [B, F, n]: S = tokens[index]


def sequence_tokens(
    embedding: FeatureEmbedding,
    seq_proj: nn.Linear,
    behaviour: nn.Embedding,
    batch: Batch,
    *,
    shared: bool,
    norm: nn.Module | None = None,
) -> tuple[torch.Tensor, Distinct | None]:
    """INFNet's sequence tokens s = norm(W_s [e_1 || ... || e_K] + e_behaviour), zero at padded
    positions: S [B, F, n, d], and (distinct tokens, index) where they were computed once per
    distinct (behaviour, item) and gathered (None where every position is its own).

    Distinct unless the tokens are time-aware (they differ by position) or the caller already
    shares histories among rows (`shared`, serving's seq_index: one history per request
    repeats items far less than a training batch's rows do, and its graph stays simple).
    Padded positions read an appended zero row, so S needs no masking pass."""
    m = batch.seq_mask
    if embedding.time_aware or shared:
        e = embedding.sequence(batch)  # [B, F, n, K, d]
        B, F, n, K, d = e.shape
        s = seq_proj(e.reshape(B, F, n, K * d)) + behaviour.weight.view(1, F, 1, d)
        s = s if norm is None else norm(s)
        return s * m.unsqueeze(-1), None
    e, f, index = embedding.distinct_sequence(batch)  # [P, K, d], [P], [B, F, n]
    tokens = seq_proj(e.flatten(1)) + behaviour(f)  # [P, d]
    tokens = tokens if norm is None else norm(tokens)
    index = torch.where(m, index, len(tokens))
    tokens = torch.cat([tokens, tokens.new_zeros(1, tokens.shape[1])])
    return tokens.index_select(0, index.flatten()).view(*index.shape, -1), (tokens, index)


def distinct_rows(
    columns: list[torch.Tensor], sizes: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of int64 columns (column j's values in [0, sizes[j])): (inverse [N],
    each row's distinct row; first [P], a row holding each distinct row).

    The columns are packed into one int64 key in mixed radix, so one 1-D `torch.unique` does
    the work (unique over rows, dim=0, is about 70x slower); where the next column would
    overflow the key, the key so far is first replaced by its rank among the distinct keys."""
    key = torch.zeros_like(columns[0]).reshape(-1)
    span = 1
    for j, (column, size) in enumerate(zip(columns, sizes, strict=True)):
        column = column.reshape(-1)
        if column.numel() and (int(column.min()) < 0 or int(column.max()) >= size):
            raise ValueError(
                f"column {j} has values outside [0, {size}): {int(column.min())}..{int(column.max())}"
            )
        if span * size >= 2**62:
            values, key = torch.unique(key, return_inverse=True)
            span = len(values)
        key, span = key * size + column, span * size
    values, inverse = torch.unique(key, return_inverse=True)
    # any row of a distinct key holds the same values, so which one scatter_ keeps is moot
    rows = torch.arange(len(key), device=key.device)
    first = torch.empty(len(values), dtype=torch.long, device=key.device).scatter_(0, inverse, rows)
    return inverse, first
