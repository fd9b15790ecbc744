"""HSTU: Hierarchical Sequential Transduction Units (Zhai et al., ICML 2024, "Actions Speak
Louder than Words: Trillion-Parameter Sequential Transducers for Generative
Recommendations", arXiv 2402.17152), adapted to pointwise multi-task ranking.

Paper -> code (section 3.1, eq. 1-3), per block on tokens X [L, D]:
- U(X), V(X), Q(X), K(X) = Split(phi_1(f_1(X)))        phi_1 = SiLU, f_1 one linear map
  (of LN(X), as the official code normalises the block input)
- A(X) V(X) = phi_2(Q(X) K(X)^T + rab^{p}) V(X)        phi_2 = SiLU, no softmax; the sum over
  keys is divided by the number of keys each query attends to ("normalised by length": the
  official code divides by the padded length n, which would make the output scale with the
  history length, see DESIGN.md section 4 on sum pooling)
- Y(X) = f_2(Norm(A(X) V(X)) o U(X)) + X                 (residual; dropout before f_2)
rab^{p}: a learned bias per relative position, shared by the heads. Batch has no
timestamps, so there is no rab^{t}: the position of an event is its recency within its own
behaviour sequence (1 = most recent, the candidate 0), which also indexes a learned
absolute position embedding added to the input, as the official input preprocessor does.

Ranking adaptation: the tokens are all behaviour sequences concatenated (each event: a
linear map of its side-field embeddings plus a behaviour-type embedding) with the target
item appended as the last token. History tokens attend to the valid history tokens (the
behaviour types are merged without timestamps, so no causal order between them is known;
all of them precede the target in time); the target attends to the history and itself; no
token attends to padding. The target token's final representation, concatenated with the
categorical field embeddings (user and context features, which the paper merges into the
sequence as contextual tokens), feeds one tower per task. The last block computes only the
target row, since nothing else is read: U and Q of the target alone, V and K of every
position: half of f_1's product and of its SiLU there (`benchmarks/train_speed.py --models
hstu --batch-size 1024`: 396-410 -> 432-451 samples/s, with the trainer's other changes
of the day).

Ignored inputs: none (without sequences the target token attends to itself only).
Defaults: the official MovieLens configs (2 blocks, 1 head, linear dropout 0.2), model
width 64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelOutput, MultiTaskModel, SequenceModelConfig, register
from infnet.models.embedding import FeatureEmbedding
from infnet.models.layers.mlp import TaskTowers


class HSTUBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, max_len: int, dropout: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"HSTU: model_dim {dim} is not divisible by num_heads {num_heads}")
        self.heads = num_heads
        self.norm_in = nn.LayerNorm(dim)
        self.f1 = nn.Linear(dim, 4 * dim)
        self.norm_av = nn.LayerNorm(dim)
        self.f2 = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.max_len = max_len
        self.rab = nn.Parameter(torch.zeros(2 * max_len + 1))  # rab^p[r_i - r_j + max_len]

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor, recency: torch.Tensor, last_only: bool = False
    ) -> torch.Tensor:
        """x [B, L, D] with the target last; valid [B, L]; recency [L]. -> [B, L or 1, D]."""
        B, L, D = x.shape
        h = self.heads
        z = self.norm_in(x)
        # Keys: valid tokens; the target key is visible to the target query only.
        allowed = torch.ones(L, L, dtype=torch.bool, device=x.device)
        allowed[:-1, -1] = False
        if last_only:  # only the target reads u and q: the other positions project v, k alone
            w, b = self.f1.weight.view(4, D, D), self.f1.bias.view(4, D)  # rows of u, v, q, k
            uq = F.linear(z[:, -1:], w[0::2].flatten(0, 1), b[0::2].flatten())
            vk = F.linear(z, w[1::2].flatten(0, 1), b[1::2].flatten())
            (u, q), (v, k) = F.silu(uq).chunk(2, dim=-1), F.silu(vk).chunk(2, dim=-1)
            allowed, x, rq = allowed[-1:], x[:, -1:], recency[-1:]
        else:
            u, v, q, k = F.silu(self.f1(z)).chunk(4, dim=-1)
            rq = recency
        Lq = q.shape[1]
        q = q.view(B, Lq, h, -1).transpose(1, 2)  # [B, h, Lq, D/h]
        k = k.view(B, L, h, -1).transpose(1, 2)
        v = v.view(B, L, h, -1).transpose(1, 2)
        rab = self.rab[rq.unsqueeze(1) - recency.unsqueeze(0) + self.max_len]  # [Lq, L]
        mask = (allowed & valid[:, None, None, :]).to(x.dtype)  # [B, 1, Lq, L]
        count = mask.sum(-1, keepdim=True).clamp_min(1.0)
        a = F.silu(q @ k.transpose(-1, -2) + rab) * mask / count
        av = (a @ v).transpose(1, 2).reshape(B, Lq, D)
        return self.f2(self.dropout(self.norm_av(av) * u)) + x


@register("hstu")
class HSTU(MultiTaskModel):
    class Config(SequenceModelConfig):
        dropout: float = 0.2
        model_dim: int = 64
        num_blocks: int = 2
        num_heads: int = 1
        tower_hidden: list[int] = [200, 80]

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        d, D = config.embedding_dim, config.model_dim
        self.embedding = FeatureEmbedding(schema, d, config.time_aware, std=config.embedding_std)
        # The candidate token is built from the fields the history shares with it; without
        # sequences, from all item tokens (a bag is one).
        self.item_tokens = [
            t
            for t, cols in enumerate(schema.token_columns)
            if schema.fields[cols[0]].group == "item"
        ]
        width = self.embedding.num_side_tokens or len(self.item_tokens)
        self.max_len = schema.sequences.max_len if schema.sequences else 0
        self.item_proj = nn.Linear(width * d, D)
        self.type_embedding = nn.Embedding(schema.num_behaviours + 1, D)  # last: the target
        self.position_embedding = nn.Embedding(self.max_len + 1, D)  # by recency, 0 = target
        self.blocks = nn.ModuleList(
            HSTUBlock(D, config.num_heads, self.max_len, config.dropout)
            for _ in range(config.num_blocks)
        )
        self.towers = TaskTowers(
            D + schema.num_categorical_tokens * d,
            schema.num_tasks,
            config.tower_hidden,
            config.dropout,
        )

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        batch = batch.per_row_histories(seq_index)
        c = self.embedding.categorical(batch)  # [B, M_tok, d]
        F_ = self.schema.num_behaviours
        item = self.embedding.target(batch) if F_ else c[:, self.item_tokens]  # [B, ., d]
        target = self.item_proj(item.flatten(1)).unsqueeze(1)  # [B, 1, D]
        target = target + self.type_embedding.weight[F_] + self.position_embedding.weight[0]
        if F_:
            n = batch.seq_ids.shape[2]
            if n > self.max_len:
                raise ValueError(
                    f"HSTU: batch sequences have {n} positions, schema max_len is {self.max_len}"
                )
            s = self.item_proj(self.embedding.sequence(batch).flatten(-2))  # [B, F, n, D]
            recency = torch.arange(n, 0, -1, device=c.device)  # [n]: 1 = most recent
            s = s + self.type_embedding.weight[:F_, None] + self.position_embedding(recency)
            x = torch.cat([s.flatten(1, 2), target], dim=1)  # [B, F*n + 1, D]
            # the target is always valid; ones_like keeps an exported batch size dynamic
            valid = torch.cat(
                [batch.seq_mask.flatten(1), torch.ones_like(batch.seq_mask[:, 0, :1])], 1
            )
            recency = torch.cat([recency.repeat(F_), recency.new_zeros(1)])
        else:
            x, valid = target, torch.ones_like(target[:, :, 0], dtype=torch.bool)
            recency = torch.zeros(1, dtype=torch.long, device=c.device)
        for i, block in enumerate(self.blocks):
            x = block(x, valid, recency, last_only=i == len(self.blocks) - 1)
        return ModelOutput(self.towers(torch.cat([x[:, -1], c.flatten(1)], dim=1)))
