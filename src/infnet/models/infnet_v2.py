"""INFNet v2: aggregate and broadcast (Li et al., "Aggregate and Broadcast: Scalable and
Efficient Feature Interaction for Recommender Systems", arXiv 2508.11565v2, January 2026);
preset v2 of models/infnet.py.

Three groups of tokens of width d, kept at full width through every block (per sample):
    C [M, d]          categorical tokens, one per field
    S [L, d]          item-level sequence tokens, L = F * n: s_t = W_s [e_1 || ... || e_K] + e_b
                      (+ p_t + r_t with time_aware, models/embedding.py); padding masked
    T [N, d]          task tokens, learned, one per task
and a few hubs per group, built from it:
    H_C [n_c, d]      = Reshape(MLP(Flatten C))                                 hub_init="mlp"
    H_S [F * n_s, d]  per behaviour b: Reshape(MaskedMean_t MLP_b(s_t))
    H_T [N + N_s, d]  = [T; T_shared]                                        task_hubs="hybrid"

A block (num_blocks stacked, linear in the token count):
  phase 1, aggregate: every hub set reads the groups by cross attention, CA(Q, K, K),
      A_X,Y = CA(H_X, Y)        for Y in views(X)   hub_views="all": C, S, T; "others": the two others
      H_X  <- LN(H_X + W_X [A_X,C || A_X,S || A_X,T])                    fusion="concat_linear"
                                                          ("sum": LN(H_X + sum_Y A_X,Y))
  phase 2, broadcast: each group's tokens read their hubs through a gated broadcast unit,
      [alpha || beta] = MLP_X(Flatten H_X),  X <- LN(X + X * sigmoid(alpha) + beta)    "bgu"
      (broadcast="pgu": v1's X <- X * 2 sigmoid(MLP_X(Flatten H_X)))
Task tokens change only through the broadcast. Heads: y_i = MLP_i(T_i) of the last block.

Where v2's text is not precise (each choice an option or measured in the v2 suite):
- input_norm (on in the preset): C and S are layer-normed before the first block. The
  embeddings start at std 0.01, so without it the first block's hubs (LN(H + update))
  barely see them: test MTL-AUC 0.636 with it, 0.609 without (`benchmarks/infnet_defaults.py
  --variants "v2 default,v2 input_norm=false" --epochs 2`, its 100k-row simulator, seed 0).
- hub_init "mean": a hub is the group's masked mean token plus a learned offset per hub (so
  the hubs of one group differ); "random": learned hubs, the same for every sample
  (Perceiver latents). Task hubs always start from the learned tokens.
- H_S with n_s > 1: MLP_b maps every position to n_s * d before the masked mean.
- H_T's task-specific hubs start from the task tokens T themselves (one parameter), so
  hub T_i and token T_i start equal and then diverge; task_hubs="shared" is [T_shared],
  "specific" is [T].
- Padded sequence positions are zeroed after every broadcast (beta would fill them) and
  masked in every attention, so padding never changes an output.
- The last block computes only what the heads read (its C and S broadcasts are dead).
- Ablations: aggregation=false keeps the hubs as built, and the task tokens' broadcast
  then reads every hub set (otherwise the heads would be constants); broadcast="none"
  keeps the tokens as embedded, and the heads read the task hubs (their task-specific hub,
  or the mean of the shared ones); use_hubs=false is the quadratic reference, each block
  X <- LN(X + SA(X)) over all tokens [C; S; T]; use_task_tokens=false drops T and H_T,
  and the heads read the mean of the final hubs.

Project extensions (off in the preset, measured in the v2 suite):
- candidate_hub: the candidate item's side-field embeddings [K, d] as one more hub set that
  reads only the sequence tokens (DIN's target attention, inside the linear budget: K x L
  scores), read by the task tokens' broadcast.
- wide_heads: y_i = MLP_i([T_i || Flatten H_C]): the heads see more than one d-wide token;
  with the candidate hub as well, MLP_i([T_i || Flatten H_C || Flatten H_cand]), so the
  candidate's read of the history reaches the heads directly, as DIN's tower reads its
  attention-pooled history.

Shared histories (serving): S and H_S before the first block depend on the history alone,
so `forward(batch, seq_index)` builds them once per history and gathers them per row.
"""

from __future__ import annotations

import torch
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelOutput, MultiTaskModel
from infnet.models.embedding import FeatureEmbedding, sequence_tokens
from infnet.models.infnet_config import INFNetConfig
from infnet.models.layers.attention import CrossAttention, attend_shared
from infnet.models.layers.bgu import BGU
from infnet.models.layers.hubs import CategoricalHubs, SequenceHubs
from infnet.models.layers.mlp import MLP
from infnet.models.layers.pgu import PGU
from infnet.models.layers.pooling import masked_mean

Group = str  # "categorical", "sequence", "task"; hubs also "candidate"
Tokens = dict[Group, torch.Tensor]  # group -> [B, n, d]
Masks = dict[Group, torch.Tensor | None]  # group -> bool [B, n] (True = real), None: all real


class Aggregate(nn.Module):
    """Phase 1 for one hub set: H <- LN(H + fuse(CA(H, Y) for Y in views))."""

    def __init__(self, views: list[Group], config: INFNetConfig) -> None:
        super().__init__()
        d = config.embedding_dim
        self.views = views
        self.attn = nn.ModuleDict(
            {y: CrossAttention(d, config.num_heads, config.dropout) for y in views}
        )
        self.fuse = nn.Linear(len(views) * d, d) if config.fusion == "concat_linear" else None
        self.norm = nn.LayerNorm(d)

    def forward(self, hubs: torch.Tensor, reads: dict[Group, torch.Tensor]) -> torch.Tensor:
        """hubs [B, h, d], reads: view -> CA(hubs, view) [B, h, d] (Block.forward computes
        them, sharing one pass over each token group among the hub sets reading it)."""
        r = [reads[y] for y in self.views]
        update = self.fuse(torch.cat(r, dim=-1)) if self.fuse is not None else sum(r)
        return self.norm(hubs + update)


class Block(nn.Module):
    """One aggregate-and-broadcast block. `aggregates`: hub set -> the token groups it reads;
    `broadcasts`: token group -> the hub sets its unit reads; `hub_sizes`: hubs per set."""

    def __init__(
        self,
        aggregates: dict[Group, list[Group]],
        broadcasts: dict[Group, list[Group]],
        hub_sizes: dict[Group, int],
        config: INFNetConfig,
    ) -> None:
        super().__init__()
        c, d = config, config.embedding_dim
        self.aggregate = nn.ModuleDict({h: Aggregate(ys, c) for h, ys in aggregates.items()})
        self.reads = broadcasts

        def unit(num_hubs: int) -> nn.Module:
            if c.broadcast == "bgu":
                return BGU(num_hubs, d, c.gate_hidden, c.bgu_form, c.dropout)
            return PGU(num_hubs, d, c.gate_hidden, "2sigmoid", c.dropout)

        self.broadcast = nn.ModuleDict(
            {x: unit(sum(hub_sizes[h] for h in hs)) for x, hs in broadcasts.items()}
        )

    def forward(
        self, tokens: Tokens, masks: Masks, hubs: Tokens, weights: dict | None = None
    ) -> tuple[Tokens, Tokens]:
        # phase 1: aggregate (every hub set reads the tokens entering the block); the hub
        # sets of few queries that read one token group share one pass over it
        reads: dict[Group, dict[Group, torch.Tensor]] = {h: {} for h in self.aggregate}
        need = weights is not None
        if need:
            for h in self.aggregate:
                weights[h] = {}
        for y in tokens:
            readers = [h for h, agg in self.aggregate.items() if y in agg.views]
            attns = [self.aggregate[h].attn[y] for h in readers]
            done = attend_shared(attns, [hubs[h] for h in readers], tokens[y], masks[y], need)
            for h, (out, w) in zip(readers, done, strict=True):
                reads[h][y] = out
                if need:
                    weights[h][y] = w
        hubs = dict(hubs)
        for h, agg in self.aggregate.items():
            hubs[h] = agg(hubs[h], reads[h])
        # phase 2: broadcast (every token group reads its updated hubs)
        tokens = dict(tokens)
        for x, unit in self.broadcast.items():
            out = unit(tokens[x], torch.cat([hubs[h] for h in self.reads[x]], dim=1))
            tokens[x] = out if masks[x] is None else out * masks[x].unsqueeze(-1)
        return tokens, hubs


class FullAttention(nn.Module):
    """The -hubs reference: X <- LN(X + SA(X)) over all tokens [C; S; T] (quadratic)."""

    def __init__(self, config: INFNetConfig) -> None:
        super().__init__()
        self.attn = CrossAttention(config.embedding_dim, config.num_heads, config.dropout)
        self.norm = nn.LayerNorm(config.embedding_dim)

    def forward(
        self, tokens: Tokens, masks: Masks, hubs: Tokens, weights: dict | None = None
    ) -> tuple[Tokens, Tokens]:
        names = list(tokens)
        sizes = [tokens[g].shape[1] for g in names]
        x = torch.cat([tokens[g] for g in names], dim=1)  # [B, M + L + N, d]
        m = torch.cat([_real(tokens[g], masks[g]) for g in names], dim=1)
        update, w = self.attn(x, x, m, weights is not None)
        if weights is not None:
            weights["all"] = w
        x = self.norm(x + update) * m.unsqueeze(-1)
        return dict(zip(names, x.split(sizes, dim=1), strict=True)), hubs


def _real(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask


class INFNetV2(MultiTaskModel):
    """INFNet v2 (module docstring: equations and choices); built by models/infnet.py for
    preset v2."""

    Config = INFNetConfig

    def __init__(self, schema: Schema, config: INFNetConfig) -> None:
        super().__init__(schema, config)
        c, d = config, config.embedding_dim
        M, N, seq = schema.num_categorical_tokens, schema.num_tasks, schema.sequences
        if c.candidate_hub and seq is None:
            raise ValueError("candidate_hub reads the behaviour sequences; the schema has none")
        self.embedding = FeatureEmbedding(schema, d, c.time_aware, std=config.embedding_std)
        if seq is not None:
            self.seq_proj = nn.Linear(schema.num_side_tokens * d, d)  # W_s
            self.behaviour = nn.Embedding(len(seq.behaviours), d)  # e_b
        self.groups: list[Group] = ["categorical", *(["sequence"] if seq else [])]
        if c.input_norm:
            self.input_norm = nn.ModuleDict({g: nn.LayerNorm(d) for g in self.groups})
        if c.use_task_tokens:
            self.groups.append("task")
            self.task_tokens = nn.Parameter(torch.randn(N, d) * 0.1)  # T
        hub_sizes: dict[Group, int] = {}
        if c.use_hubs:
            self.categorical_hubs = CategoricalHubs(
                c.hub_init, M, c.num_categorical_hubs, d, c.hub_hidden, c.dropout
            )
            hub_sizes["categorical"] = c.num_categorical_hubs
            if seq is not None:
                self.sequence_hubs = SequenceHubs(
                    c.hub_init,
                    len(seq.behaviours),
                    c.sequence_hubs_per_behaviour,
                    d,
                    c.hub_hidden,
                    c.dropout,
                )
                hub_sizes["sequence"] = len(seq.behaviours) * c.sequence_hubs_per_behaviour
            if c.use_task_tokens:
                if c.task_hubs != "specific":
                    self.shared_task_hubs = nn.Parameter(
                        torch.randn(c.num_shared_task_hubs, d) * 0.1
                    )  # T_shared
                hub_sizes["task"] = (N if c.task_hubs != "shared" else 0) + (
                    c.num_shared_task_hubs if c.task_hubs != "specific" else 0
                )
            if c.candidate_hub:
                hub_sizes["candidate"] = schema.num_side_tokens
        self.hub_sizes = hub_sizes
        blocks, first_reads = self._blocks(hub_sizes)
        self.blocks = nn.ModuleList(blocks)
        # hub sets nothing reads (without broadcast only the task hubs reach the heads)
        for h, name in (("categorical", "categorical_hubs"), ("sequence", "sequence_hubs")):
            if h in hub_sizes and h not in first_reads:
                delattr(self, name)
        wide = self._wide_hubs(hub_sizes)
        width = d + sum(hub_sizes[h] for h in wide) * d
        self.heads = nn.ModuleList(MLP(width, c.head_hidden, 1, c.dropout) for _ in range(N))

    # --- topology ------------------------------------------------------------------------
    def _wide_hubs(self, hub_sizes: dict[Group, int]) -> list[Group]:
        """The hub sets the wide heads read."""
        if not self.config.wide_heads:
            return []
        return ["categorical", *(["candidate"] if "candidate" in hub_sizes else [])]

    def _blocks(self, hub_sizes: dict[Group, int]) -> tuple[list[nn.Module], set[Group]]:
        """The blocks, and the hub sets the first one reads."""
        c = self.config
        if not c.use_hubs:
            return [FullAttention(c) for _ in range(c.num_blocks)], set()
        views = {
            h: [y for y in self.groups if c.hub_views == "all" or y != h]
            for h in hub_sizes
            if h != "candidate"
        }
        if "candidate" in hub_sizes:
            views["candidate"] = ["sequence"]  # target attention
        reads = {x: [x] for x in self.groups}
        if "task" in reads:
            if "candidate" in hub_sizes:
                reads["task"].append("candidate")
            if not c.aggregation:  # the only path from the inputs to the task tokens
                reads["task"] = list(hub_sizes)
        # What the heads read, then backwards what each block must compute.
        live_tokens = {"task"} if "task" in self.groups and c.broadcast != "none" else set()
        live_hubs = set() if live_tokens else ({"task"} if "task" in hub_sizes else set(views))
        live_hubs |= set(self._wide_hubs(hub_sizes))
        blocks = []
        for _ in range(c.num_blocks):
            broadcasts = (
                {x: reads[x] for x in self.groups if x in live_tokens}
                if c.broadcast != "none"
                else {}
            )
            hubs_read = live_hubs | {h for hs in broadcasts.values() for h in hs}
            # in views' order, not the set's: module creation order fixes the initialisation
            aggregates = (
                {h: ys for h, ys in views.items() if h in hubs_read} if c.aggregation else {}
            )
            blocks.append(Block(aggregates, broadcasts, hub_sizes, c))
            live_hubs = hubs_read
            live_tokens = live_tokens | {y for ys in aggregates.values() for y in ys}
        return blocks[::-1], live_hubs

    # --- tokens and hubs -----------------------------------------------------------------
    def _inputs(self, batch: Batch, seq_index: torch.Tensor | None) -> tuple[Tokens, Masks, Tokens]:
        c = self.config
        C = self.embedding.categorical(batch)  # [B, M, d]
        if c.input_norm:
            C = self.input_norm["categorical"](C)
        B = C.shape[0]
        tokens: Tokens = {"categorical": C}
        masks: Masks = {"categorical": None}
        hubs: Tokens = {}
        if hasattr(self, "categorical_hubs"):
            hubs["categorical"] = self.categorical_hubs(C)  # [B, n_c, d]
        if self.schema.sequences is not None:
            norm = self.input_norm["sequence"] if c.input_norm else None
            s, distinct = sequence_tokens(  # [U, F, n, d]: once per history
                self.embedding,
                self.seq_proj,
                self.behaviour,
                batch,
                shared=seq_index is not None,
                norm=norm,
            )
            m = batch.seq_mask
            hs = self.sequence_hubs(s, m, distinct) if hasattr(self, "sequence_hubs") else None
            if seq_index is not None:  # row b reads history seq_index[b]
                s, m = s.index_select(0, seq_index), m.index_select(0, seq_index)
                hs = None if hs is None else hs.index_select(0, seq_index)
            tokens["sequence"], masks["sequence"] = s.flatten(1, 2), m.flatten(1)  # [B, L, .]
            if hs is not None:
                hubs["sequence"] = hs  # [B, F * n_s, d]
            if c.candidate_hub:
                hubs["candidate"] = self.embedding.target(batch)  # [B, K, d]
        if c.use_task_tokens:
            T = self.task_tokens.expand(B, -1, -1)  # [B, N, d]
            tokens["task"], masks["task"] = T, None
            if c.use_hubs:
                parts = [T] if c.task_hubs != "shared" else []
                if c.task_hubs != "specific":
                    parts.append(self.shared_task_hubs.expand(B, -1, -1))
                hubs["task"] = torch.cat(parts, dim=1)  # [B, N + N_s, d]
        return tokens, masks, hubs

    # --- forward -------------------------------------------------------------------------
    def _run(
        self, batch: Batch, seq_index: torch.Tensor | None, weights: list | None = None
    ) -> tuple[Tokens, Masks, Tokens]:
        tokens, masks, hubs = self._inputs(batch, seq_index)
        for block in self.blocks:
            w = {} if weights is not None else None
            tokens, hubs = block(tokens, masks, hubs, w)
            if weights is not None:
                weights.append(w)
        return tokens, masks, hubs

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        """seq_index: int64 [B], the history (row of batch.seq_ids, seq_mask) each row reads;
        None: row b reads history b."""
        c, N = self.config, self.schema.num_tasks
        tokens, masks, hubs = self._run(batch, seq_index)
        if c.use_task_tokens and (c.broadcast != "none" or not c.use_hubs):
            reps = list(tokens["task"].unbind(1))  # N x [B, d]
        elif c.use_task_tokens:  # no broadcast: the task hubs
            h = hubs["task"]  # [B, N + N_s, d]: hub T_i plus the mean of the shared hubs
            if c.task_hubs == "specific":
                per_task = h
            elif c.task_hubs == "shared":
                per_task = h.mean(1, keepdim=True).expand(-1, N, -1)
            else:
                per_task = h[:, :N] + h[:, N:].mean(1, keepdim=True)
            reps = list(per_task.unbind(1))
        else:  # no task tokens: the mean of the final hubs (of the tokens, without hubs)
            if c.use_hubs:
                pooled = torch.stack([h.mean(1) for h in hubs.values()]).mean(0)
            else:
                pooled = torch.stack(
                    [masked_mean(tokens[g], _real(tokens[g], masks[g]), 1) for g in self.groups]
                ).mean(0)
            reps = [pooled] * N
        if c.wide_heads:
            wide = torch.cat([hubs[h].flatten(1) for h in self._wide_hubs(self.hub_sizes)], 1)
            reps = [torch.cat([r, wide], dim=-1) for r in reps]
        return ModelOutput(
            torch.cat([head(r) for head, r in zip(self.heads, reps, strict=True)], -1)
        )

    @torch.no_grad()
    def attention_maps(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The last aggregating block's attention (mean over heads) of the task-specific hubs
        ("task", [B, N, .]) and the shared task hubs ("shared", [B, N_s, .]) over the
        categorical ([., M]) and sequence ([., L]) tokens, keyed "task/categorical", ... Each
        map is one softmax (rows sum to 1 over real keys; padded keys get 0)."""
        c, N = self.config, self.schema.num_tasks
        if not (c.use_task_tokens and c.use_hubs and c.aggregation and c.hub_views == "all"):
            raise ValueError(
                "attention_maps needs use_task_tokens, use_hubs and aggregation true and "
                "hub_views 'all' (the task hubs then read the categorical and sequence tokens)"
            )
        weights: list[dict] = []
        self._run(batch, None, weights)
        last = next(w["task"] for w in reversed(weights) if "task" in w)
        parts = {"task": slice(0, N)} if c.task_hubs != "shared" else {}
        if c.task_hubs != "specific":
            parts["shared"] = slice(N if c.task_hubs == "hybrid" else 0, None)
        return {
            f"{label}/{group}": last[group][:, rows]
            for label, rows in parts.items()
            for group in ("categorical", "sequence")
            if group in last
        }
