"""DIEN: Deep Interest Evolution Network (Zhou et al., AAAI 2019, arXiv 1809.03672), multi-task.

Paper -> code, for each behaviour type (each sequence plays the paper's click sequence):
- Interest extractor, eq. (1): a GRU over the behaviour embeddings e_b[t] (the side-field
  embeddings of position t, concatenated) -> `extractor`, hidden states h_t.
- Auxiliary loss, eq. (3): L_aux = -1/N sum_i sum_t [log sigma(h_t, e_b[t+1]) +
  log(1 - sigma(h_t, e^_b[t+1]))], with sigma(.,.) the paper's auxiliary net (an MLP
  100 x 50 over [h_t, e], as in the official code and FuxiCTR) -> `aux_net`. The negative
  e^_b[t+1] is the embedding of a behaviour drawn uniformly from all valid positions of the
  same behaviour type in the batch (the paper samples from the item set; a draw can, rarely,
  equal the positive). Returned as `ModelOutput.auxiliary_loss` = alpha * L_aux (eq. 6) in training.
- Attention, eq. (4): a_t = exp(h_t W e_a) / sum_j exp(h_j W e_a), over valid positions,
  e_a the candidate's side-field embeddings -> `bilinear`.
- Interest evolving layer with AUGRU, eq. (7)-(8): u'_t = a_t * u_t, h'_t = (1 - u'_t) o
  h'_{t-1} + u'_t o h~'_t -> `AUGRU`; its last state h'_T is the final interest.
- MLP 200 x 80 (Dice, as DIN) over [profile, final interests, candidate, context]; here one
  such tower per task over the shared backbone.

Padding: sequences arrive left-padded (most recent last). Each row is rotated to right
padding, so the valid events come first; the GRU is causal, so its states over the valid
prefix do not depend on what follows, and states at padded positions are zeroed. The AUGRU
keeps its state unchanged at padded positions, so a row without history has a zero final
interest and, like every row, a finite output.

Ignored inputs: none of the schema's inputs (every behaviour type gets its own extractor,
attention and AUGRU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelOutput, MultiTaskModel, SequenceModelConfig, register
from infnet.models.embedding import FeatureEmbedding, target_query
from infnet.models.layers.dice import Activation, dice_mlp
from infnet.models.layers.mlp import MLP


def to_right_padding(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each left-padded row so its valid positions come first.

    x: [B, n, D], mask: [B, n] (valid positions are the last `length` ones).
    """
    n = mask.shape[1]
    length = mask.sum(1)  # [B]
    index = (torch.arange(n, device=x.device) + (n - length).unsqueeze(1)) % n  # [B, n]
    x = x.gather(1, index.unsqueeze(-1).expand_as(x))
    return x, torch.arange(n, device=x.device) < length.unsqueeze(1)


class AUGRU(nn.Module):
    """GRU with attentional update gate (DIEN eq. 8), over right-padded sequences."""

    def __init__(self, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.w = nn.Linear(input_dim, 3 * hidden)  # W^u, W^r, W^h and the biases
        self.u = nn.Linear(hidden, 3 * hidden, bias=False)  # U^u, U^r, U^h

    def forward(self, i: torch.Tensor, a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """i [B, n, D], attention a [B, n], mask [B, n] -> last state [B, H]."""
        h = i.new_zeros(i.shape[0], self.hidden)
        # eager: stop after the longest history; an exported graph runs every position (the
        # masked steps keep h), since a traced step count would be fixed into the graph
        exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        steps = mask.shape[1] if exporting else int(mask.sum(1).max()) if mask.numel() else 0
        # One matmul for all steps; unbind (not per-step slicing) keeps the backward to one
        # gradient buffer instead of a full-size zero tensor per step.
        wi = self.w(i[:, :steps]).unbind(1)  # steps x [B, 3H]
        a, mask = a[:, :steps, None].unbind(1), mask[:, :steps, None].unbind(1)
        for t in range(steps):
            wu, wr, wh = wi[t].chunk(3, dim=-1)
            uu, ur, uh = self.u(h).chunk(3, dim=-1)
            u = torch.sigmoid(wu + uu)
            r = torch.sigmoid(wr + ur)
            h_tilde = torch.tanh(wh + r * uh)
            u = a[t] * u  # u'_t = a_t * u_t
            h = torch.where(mask[t], (1 - u) * h + u * h_tilde, h)
        return h


class InterestBranch(nn.Module):
    """Extractor GRU + auxiliary net + attention + AUGRU for one behaviour type."""

    def __init__(self, item_dim: int, hidden: int, aux_hidden: list[int]) -> None:
        super().__init__()
        self.extractor = nn.GRU(item_dim, hidden, batch_first=True)
        self.aux_net = MLP(hidden + item_dim, aux_hidden, 1)
        self.bilinear = nn.Linear(item_dim, hidden, bias=False)  # W of eq. (4), applied to e_a
        self.evolution = AUGRU(hidden, hidden)

    def forward(
        self, e: torch.Tensor, mask: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """e [B, n, D] left-padded, mask [B, n], target [B, D] ->
        (final interest [B, H], summed auxiliary loss, number of auxiliary pairs)."""
        e, mask = to_right_padding(e, mask)
        h, _ = self.extractor(e)
        h = h * mask.unsqueeze(-1)  # [B, n, H]

        scores = (h @ self.bilinear(target).unsqueeze(-1)).squeeze(-1)  # h_t W e_a: [B, n]
        # Masked softmax; a row with no valid position gets all-zero weights (never NaN).
        a = torch.softmax(scores.masked_fill(~mask, -1e9), dim=1) * mask

        aux, pairs = e.new_zeros(()), 0
        if self.training:
            nxt = mask[:, 1:]  # t+1 exists (then t does too)
            pairs = int(nxt.sum())
            if pairs:
                h_t = h[:, :-1][nxt]  # [P, H]
                pos = e[:, 1:][nxt]  # [P, D]
                pool = e[mask]
                neg = pool[torch.randint(len(pool), (pairs,), device=e.device)]
                logits = self.aux_net(
                    torch.cat([torch.cat([h_t, pos], 1), torch.cat([h_t, neg], 1)])
                )
                labels = torch.cat([logits.new_ones(pairs, 1), logits.new_zeros(pairs, 1)])
                aux = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / 2
        return self.evolution(h, a, mask), aux, pairs


@register("dien")
class DIEN(MultiTaskModel):
    class Config(SequenceModelConfig):
        gru_hidden: int | None = None  # None: the behaviour embedding size K*d
        aux_hidden: list[int] = [100, 50]
        aux_loss_alpha: float = 1.0
        tower_hidden: list[int] = [200, 80]
        activation: Activation = "dice"

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        d = config.embedding_dim
        self.embedding = FeatureEmbedding(schema, d, config.time_aware, std=config.embedding_std)
        kd = self.embedding.num_side_tokens * d
        hidden = config.gru_hidden or kd
        self.branches = nn.ModuleList(
            InterestBranch(kd, hidden, config.aux_hidden) for _ in range(schema.num_behaviours)
        )
        in_dim = schema.num_categorical_tokens * d + schema.num_behaviours * hidden
        self.towers = nn.ModuleList(
            dice_mlp(in_dim, config.tower_hidden, 1, config.activation, config.dropout)
            for _ in schema.tasks
        )

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        batch = batch.per_row_histories(seq_index)
        c = self.embedding.categorical(batch)
        parts = [c.flatten(1)]
        aux_sum, pairs = c.new_zeros(()), 0
        if self.branches:
            target = target_query(self.embedding, batch)
            s = self.embedding.sequence(batch).flatten(-2)  # [B, F, n, K*d]
            for f, branch in enumerate(self.branches):
                interest, aux, p = branch(s[:, f], batch.seq_mask[:, f], target)
                parts.append(interest)
                aux_sum, pairs = aux_sum + aux, pairs + p
        x = torch.cat(parts, dim=1)
        logits = torch.cat([tower(x) for tower in self.towers], dim=1)
        if not self.training:
            return ModelOutput(logits)
        return ModelOutput(logits, self.config.aux_loss_alpha * aux_sum / max(pairs, 1))
