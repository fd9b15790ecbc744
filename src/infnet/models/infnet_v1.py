"""INFNet v1: a task-aware Information Flow Network (Li et al., Kuaishou, arXiv 2508.11565v1);
preset v1 of models/infnet.py. The paper calls hubs "proxies" (C~, S~, T~); the options use
v2's name, hubs.

Tokens (width d; B the batch, shapes per sample):
    C  [M, d]        categorical tokens, one embedding per field (FeatureEmbedding)
    C~ [m, d]        categorical proxies  = Reshape(phi_cat(Flatten(C)))            (eq. 3)
    S  [L, d]        sequence tokens, L = F * n: s = W_s [e_1 || ... || e_K] + e_behaviour,
                     padded positions masked in every attention and pooling
    S~ [F * k, d]    sequence proxies: per behaviour (and per segment of n / k positions,
                     most recent first) Pool_t phi_seq(s_t); the paper sums       (eq. 5)
    T  [N_task, d]   task tokens, learnable, one per real task                      (eq. 6)
    T~ [N_s, d]      shared task tokens (task proxies), learnable                   (eq. 7)

Block l (N stacked), CA(Q, K, V) = softmax(Q W_q (K W_k)^T / sqrt(d_k)) V W_v, multi-head:
    heterogeneous flow                                                        (eq. 9-12)
        C~' = CA(C~, S, S) + CA(C~, T, T)        code: flows "Cp" <- ["S", "T"]
        S~' = CA(S~, C, C) + CA(S~, T, T)                    "Sp" <- ["C", "T"]
        T~' = CA(T~, C, C) + CA(T~, S, S)                    "Tp" <- ["C", "S"]
        T^  = CA(T,  C, C) + CA(T,  S, S)                    "T"  <- ["C", "S"]
    homogeneous flow: PGU(X, X~) = X * sigmoid(MLP(Flatten(X~)))              (eq. 13-14)
        C' = PGU(C, C~)   S' = PGU(S, S~)   T' = PGU(T^, T~)   code: gates "C" <- ["Cp"], ...
    heads: y_i = MLP_i(T'_i) of the last block (logit or value; the trainer applies sigmoid)

Shared histories (serving): the candidates of one request share the user's behaviour
sequences, so `forward(batch, seq_index)` takes U distinct histories (`batch.seq_ids`
[U, F, n, K]) and row b reads history seq_index[b]. S and S~ of the first block depend on
the history alone and are computed once per history, then gathered per row; everything
that reads a candidate (the blocks' flows and gates) runs per row as before, so the
outputs equal those of the repeated histories.

Gathered tokens: S is a gather of a smaller table, its distinct (behaviour, item) tokens in
training and its U histories in serving, until a gate scales it per row. A block that reads
S while it is still that gather layer-norms the table and gathers the result, LN(D[i]) =
LN(D)[i], the padding row included: one normalisation per table row, not per position.

Engineering choices the paper leaves open (every one an option of `INFNetConfig`):
- `residual`, `norm`: the updates of proxies and task tokens are X + CA(..) (the paper:
  "residual connections are used"), with LayerNorm after ("post"), before ("pre") or none.
- `gate`: sigmoid (paper), 2 * sigmoid or 1 + sigmoid. A sigmoid gate starts at 0.5, so
  after two blocks the key/value tokens are a quarter of their size (DESIGN.md pitfall).
- `pgu_hubs`: the paper's equation 14 gates with the proxies entering the block
  (C~^(l), "pre"); DESIGN.md writes the updated ones (C~', "post").
- `sequence_pooling`: sum (paper), mean, or sqrt (sum / sqrt(count)). Sum-pooled proxies
  grow with history length, which within one user grows with time, so a model that reads
  them ranks a user's rows by time (like gAUC below random on KuaiRand).
- With the heterogeneous flow off, the task tokens' gate reads all proxies (the only path
  left from the inputs to the task tokens; otherwise the heads would be constants).

Defaults: the paper's where it gives them; the rest chosen by
`benchmarks/infnet_defaults.py` (each option against the default on the simulator; the
figures are in the README, "INFNet's open engineering options"):
- norm="pre" with residual=True: LayerNorm on the queries and keys of every cross attention,
  the residual stream left as it is (the usual pre-norm transformer); post-norm lost most
  on the like task.
- gate="2sigmoid": starts at 1 (identity), so stacked blocks keep the keys' scale (pitfall).
- pgu_hubs="post": with the paper's "pre" and 2 blocks, no live path reads the C~ and S~
  updates of any block (block 1 gates with block 1's input proxies, block 2's C, S are
  never read), so the flows to categorical and sequence are dead code; "post" keeps them.
- num_blocks=2, num_heads=2, hub and gate MLPs 64 and 32 wide: small, fast on CPU at d=16.
Two chosen on the KuaiRand slice (README, "INFNet's default"; 5 seeds, 1 epoch, batch 1024,
against the earlier mean pooling and [64] heads: MTL-AUC +0.0043, paired t p = 0.034; like
+0.0096, p = 0.009; click and long view level):
- sequence_pooling="sqrt": sum / sqrt(count) keeps some of the history's size, which a mean
  drops, with less of the sum's growth over a user's rows (like gAUC 0.563 against 0.541).
- head_hidden=[256, 128]: MLP_i reads one d-wide token, so its depth is the model's only
  per-task capacity after the blocks (DIN's towers are 200 x 80).

Ablation switches (one model, DESIGN.md section 4):
    use_task_tokens=False   no T and T~; head i reads the mean of the final proxies
    use_hubs=False          the quadratic reference: one full multi-head self-attention over
                            all tokens [C; S; T] per block replaces the four flows; each
                            type's PGU gate reads the masked mean of its own tokens
    broadcast="none"        no PGU (homogeneous flow): C and S stay the embeddings, T' = T^
    aggregation=False       no cross attention (heterogeneous flow): proxies stay as built,
                            T^ = T
    structured=False        C and S are one untyped feature set X = [C; S] with one proxy set
                            X~ = [C~; S~] that queries all of X (and T), one PGU for X. Task
                            tokens keep their role (removing them is use_task_tokens).
"""

from __future__ import annotations

import torch
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelOutput, MultiTaskModel
from infnet.models.embedding import Distinct, FeatureEmbedding, sequence_tokens
from infnet.models.infnet_config import INFNetConfig
from infnet.models.infnet_v1_block import Block, Histories, Masks, Tables, Tokens, live, real
from infnet.models.layers.mlp import MLP, pooled_mlp
from infnet.models.layers.pooling import masked_mean


class INFNetV1(MultiTaskModel):
    """INFNet v1 (module docstring: equations and code map); built by models/infnet.py for
    preset v1."""

    Config = INFNetConfig

    def __init__(self, schema: Schema, config: INFNetConfig) -> None:
        super().__init__(schema, config)
        c, d = config, config.embedding_dim
        self.embedding = FeatureEmbedding(schema, d, c.time_aware, std=config.embedding_std)
        M, T = schema.num_categorical_tokens, schema.num_tasks
        seq = schema.sequences
        if seq is not None and c.sequence_hubs_per_behaviour > seq.max_len:
            raise ValueError(
                f"sequence_hubs_per_behaviour ({c.sequence_hubs_per_behaviour}) exceeds the "
                f"sequence max_len ({seq.max_len}) of the schema"
            )
        if seq is not None:
            self.seq_proj = nn.Linear(schema.num_side_tokens * d, d)
            self.behaviour = nn.Embedding(len(seq.behaviours), d)
        sizes: dict[str, int] = {}
        if c.use_hubs:
            self.phi_cat = MLP(M * d, c.hub_hidden, c.num_categorical_hubs * d, c.dropout)
            sizes["Cp"] = c.num_categorical_hubs
            if seq is not None:
                self.phi_seq = MLP(d, c.hub_hidden, d, c.dropout)
                k = c.sequence_hubs_per_behaviour
                # segment of each position: recency rank (n-1-p, histories are left-padded
                # with the most recent last) cut into k equal parts, most recent first.
                rank = torch.arange(seq.max_len).flip(0)
                self.register_buffer(
                    "segments",
                    nn.functional.one_hot(rank * k // seq.max_len, k).float(),
                    persistent=False,
                )
                sizes["Sp"] = len(seq.behaviours) * k
        if c.use_task_tokens:
            self.task_tokens = nn.Parameter(torch.randn(T, d) * 0.1)  # T
            if c.use_hubs:
                self.shared_task_tokens = nn.Parameter(torch.randn(c.num_shared_task_hubs, d) * 0.1)
                sizes["Tp"] = c.num_shared_task_hubs
        if not c.structured and c.use_hubs and seq is not None:
            sizes = {"Xp": sizes.pop("Cp") + sizes.pop("Sp"), **sizes}  # X~ = [C~; S~]
        features = ["C", "S"] if seq is not None else ["C"]
        if not c.structured and seq is not None:
            features = ["X"]
        tasks = ["T"] if c.use_task_tokens else []
        self.token_names = features + tasks
        flows, gates = self._topology(features, tasks, sizes)
        if not c.use_hubs:
            sizes = {f"{n}p": 1 for n in self.token_names}
        # What the heads read, then backwards through the blocks what each block must
        # compute: the paper's last block updates C~, S~ and gates C, S although nothing
        # reads them afterwards, and without the PGU nothing reads any proxy at all.
        proxies = [n for n in sizes if n != "Tp"]
        self.head_inputs = tasks or (proxies if c.use_hubs else self.token_names)
        needed, blocks = set(self.head_inputs), []
        for _ in range(c.num_blocks):
            full = None if c.use_hubs else self.token_names
            f, g, needed = live(flows, gates, needed, c.pgu_hubs == "pre", full)
            blocks.append(Block(sizes, f, g, c, full=not c.use_hubs))
        self.blocks = nn.ModuleList(reversed(blocks))
        self.inputs = needed  # the token and proxy sets the first block reads
        if c.use_hubs and not {"Cp", "Xp"} & needed:
            del self.phi_cat
        if c.use_hubs and seq is not None and not {"Sp", "Xp"} & needed:
            del self.phi_seq
        if c.use_task_tokens and c.use_hubs and "Tp" not in needed:
            del self.shared_task_tokens
        self.heads = nn.ModuleList(MLP(d, c.head_hidden, 1, c.dropout) for _ in range(T))

    def _topology(
        self, features: list[str], tasks: list[str], sizes: dict[str, int]
    ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        c = self.config
        flows: dict[str, list[str]] = {}
        gates: dict[str, list[str]] = {}
        if c.use_hubs and c.aggregation:
            for f in features:
                # typed: a proxy reads the other types (its own type is the homogeneous
                # flow's); untyped: there is one type, so it reads all features.
                others = [g for g in features if g != f] if c.structured else features
                flows[f"{f}p"] = others + tasks
            if tasks:
                flows["Tp"] = list(features)
                flows["T"] = list(features)
        if c.broadcast != "none":
            for x in features + tasks:
                gates[x] = [f"{x}p"]
            if tasks and c.use_hubs and not c.aggregation:
                gates["T"] = [p for p in sizes]  # the only path from the inputs to T
        return flows, gates

    # --- tokens -------------------------------------------------------------------------
    def _sequence(
        self, batch: Batch, shared: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, Distinct | None]:
        """S [U, F, n, d], its mask [U, F, n], S~ [U, F * k, d] (None without phi_seq) and the
        distinct tokens S gathers (embedding.sequence_tokens). shared: the caller already
        shares histories among rows (seq_index)."""
        s, distinct = sequence_tokens(
            self.embedding, self.seq_proj, self.behaviour, batch, shared=shared
        )
        m = batch.seq_mask
        sp = self._sequence_proxies(s, distinct, m) if hasattr(self, "phi_seq") else None
        return s, m, sp, distinct

    def _sequence_proxies(
        self, s: torch.Tensor, distinct: Distinct | None, mask: torch.Tensor
    ) -> torch.Tensor:
        # s [B, F, n, d], mask [B, F, n] -> S~ [B, F * k, d]; phi_seq's hidden layers run on
        # the distinct tokens where there are some
        B, F, n = mask.shape
        w = mask.to(s.dtype).unsqueeze(-1) * self.segments  # [B, F, n, k]
        w = w.view(B * F, n, -1).transpose(1, 2)  # [B F, k, n]
        if distinct is None:
            pooled = pooled_mlp(self.phi_seq, s.reshape(B * F, n, -1), w)  # [B F, k, d]
        else:
            tokens, index = distinct
            pooled = pooled_mlp(self.phi_seq, tokens, w, index.view(B * F, n))
        if self.config.sequence_pooling != "sum":
            count = w.sum(-1, keepdim=True).clamp_min(1.0)  # [B F, k, 1]
            pooled = pooled / (count if self.config.sequence_pooling == "mean" else count.sqrt())
        return pooled.view(B, -1, pooled.shape[-1])

    def _tokens(
        self, batch: Batch, seq_index: torch.Tensor | None
    ) -> tuple[Tokens, Masks, Tables, Histories]:
        c = self.config
        C = self.embedding.categorical(batch)  # [B, M, d]
        B = C.shape[0]
        h: Tokens = {"C": C}
        mask: Masks = {"C": None}
        tables: Tables = {}
        histories: Histories = {}
        if hasattr(self, "phi_cat"):
            h["Cp"] = self.phi_cat(C.flatten(1)).view(B, c.num_categorical_hubs, -1)
            mask["Cp"] = None
        if self.schema.sequences is not None:
            s, m, sp, distinct = self._sequence(batch, seq_index is not None)  # once per history
            U, F, n, d = s.shape
            if distinct is not None:  # S gathers the distinct tokens
                tokens, index = distinct
                tables["S"] = (tokens, index.view(U, F * n))
            if seq_index is not None:  # row b reads history seq_index[b]
                positions = torch.arange(F * n, device=s.device)
                tables["S"] = (s.flatten(0, 2), seq_index.unsqueeze(1) * (F * n) + positions)
                histories["S"] = (m.flatten(1), seq_index)
                s, m = s.index_select(0, seq_index), m.index_select(0, seq_index)
                sp = None if sp is None else sp.index_select(0, seq_index)
            h["S"], mask["S"] = s.flatten(1, 2), m.flatten(1)  # [B, L, d], [B, L]
            if sp is not None:
                h["Sp"], mask["Sp"] = sp, None
            if not c.structured:
                tables.clear()  # X = [C; S] gathers no table
                histories.clear()
                h["X"] = torch.cat([h.pop("C"), h.pop("S")], dim=1)
                mask["X"] = torch.cat([real(C, None), mask.pop("S")], dim=1)
                mask.pop("C")
                if "Xp" in self.inputs:
                    h["Xp"], mask["Xp"] = torch.cat([h.pop("Cp"), h.pop("Sp")], dim=1), None
                    mask.pop("Cp"), mask.pop("Sp")
        if c.use_task_tokens:
            h["T"], mask["T"] = self.task_tokens.expand(B, -1, -1), None
            if hasattr(self, "shared_task_tokens"):
                h["Tp"], mask["Tp"] = self.shared_task_tokens.expand(B, -1, -1), None
        return h, mask, tables, histories

    # --- forward ------------------------------------------------------------------------
    def _run(
        self, batch: Batch, weights: dict | None = None, seq_index: torch.Tensor | None = None
    ) -> tuple[Tokens, Masks]:
        h, mask, tables, histories = self._tokens(batch, seq_index)
        for block in self.blocks:  # weights: each key from the last block that computes it
            new = block(h, mask, weights, tables, histories)
            tables = {n: t for n, t in tables.items() if new[n] is h[n]}  # not yet gated
            histories = {n: t for n, t in histories.items() if n in tables}
            h = {n: x for n, x in new.items() if n in mask}  # drop full attention's gate means
        return h, mask

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        """seq_index: int64 [B], the history (row of batch.seq_ids, seq_mask) each row reads;
        None: row b reads history b."""
        h, mask = self._run(batch, seq_index=seq_index)
        if self.config.use_task_tokens:
            reps = h["T"].unbind(1)  # N_task x [B, d]
        else:  # the mean of the final proxies (of the tokens, without proxies)
            names = self.head_inputs
            pooled = torch.stack([masked_mean(h[n], real(h[n], mask[n]), 1) for n in names]).mean(0)
            reps = [pooled] * len(self.heads)  # [B, d] each
        return ModelOutput(
            torch.cat([head(r) for head, r in zip(self.heads, reps, strict=True)], -1)
        )

    @torch.no_grad()
    def attention_maps(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The last block's attention (mean over heads) of the task tokens ("task", [B, N_task, .])
        and the shared task tokens ("shared", [B, N_s, .]) over the categorical ([., M]) and
        sequence ([., L]) tokens, keyed "task/categorical", "task/sequence", "shared/...".
        Each map is one softmax (rows sum to 1 over real keys; padded keys get 0); under
        use_hubs=false the single softmax runs over all tokens, sliced here. Under
        pgu_hubs="pre" nothing reads the final block's T~ update, so "shared/*" come
        from the block before it."""
        c = self.config
        if not c.use_task_tokens or not c.aggregation:
            raise ValueError("attention_maps needs use_task_tokens=true and aggregation=true")
        w: dict[str, torch.Tensor] = {}
        self._run(batch, w)
        M = self.schema.num_categorical_tokens
        L = batch.seq_mask[0].numel() if self.schema.sequences is not None else 0
        N = self.schema.num_tasks
        maps: dict[str, torch.Tensor] = {}
        queries = {"task": "T", "shared": "Tp"} if c.use_hubs else {"task": "T"}
        for label, q in queries.items():
            if not c.use_hubs:
                rows = w["all"][:, M + L : M + L + N]  # task rows of [C; S; T] x [C; S; T]
                maps[f"{label}/categorical"] = rows[..., :M]
                if L:
                    maps[f"{label}/sequence"] = rows[..., M : M + L]
            elif f"{q}_X" in w:
                maps[f"{label}/categorical"] = w[f"{q}_X"][..., :M]
                maps[f"{label}/sequence"] = w[f"{q}_X"][..., M:]
            elif f"{q}_C" in w:
                maps[f"{label}/categorical"] = w[f"{q}_C"]
                if L:
                    maps[f"{label}/sequence"] = w[f"{q}_S"]
        return maps
