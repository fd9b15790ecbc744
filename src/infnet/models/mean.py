"""Mean: the item's and the user's shrunk train-split label means, the reference that
says whether a model learned more than who likes what on average.

For task t, the row's item v and user u (layers/shrunk_means.py for the means and the
link g: logit for binary tasks, the standardised z for regression tasks),

    y_t = g(p_t) + a_t (g(mean_item[v, t]) - g(p_t)) + c_t (g(mean_user[u, t]) - g(p_t)) + b_t

with a_t = c_t = 1 and b_t = 0 at the start: the item's mean shrunk to the global one,
plus the user's offset from it (for binary tasks, the naive-Bayes sum of log-odds). The
three scalars per task (a, c, b) are a calibration trained like any model's weights. The counts come
from `fit_statistics` (every train row, once); a train row's own label is left out of
both counts, a valid or test row reads the train counts: nothing after the cut-off.

Ignored inputs: every field but the user and item keys, and the behaviour sequences. The
embedding size and dropout are not used.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from pydantic import Field
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelConfig, ModelOutput, MultiTaskModel, register
from infnet.models.layers.shrunk_means import ShrunkMeans, key_column


@register("mean")
class Mean(MultiTaskModel):
    class Config(ModelConfig):
        item_strength: float = Field(default=20.0, gt=0)  # pseudo-rows of the global mean
        user_strength: float = Field(default=20.0, gt=0)

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        T, tasks = schema.num_tasks, schema.tasks
        self.item = key_column(schema, schema.item_key, "mean")
        self.user = key_column(schema, schema.user_key, "mean")
        self.items = ShrunkMeans(
            schema.field(schema.item_key).vocab_size, tasks, config.item_strength
        )
        self.users = ShrunkMeans(
            schema.field(schema.user_key).vocab_size, tasks, config.user_strength
        )
        self.item_scale = nn.Parameter(torch.ones(T))  # a
        self.user_scale = nn.Parameter(torch.ones(T))  # c
        self.bias = nn.Parameter(torch.zeros(T))  # b

    def fit_statistics(self, batches: Iterable[Batch]) -> None:
        for b in batches:
            self.items.observe(b.categorical[:, self.item], b.labels, b.label_mask)
            self.users.observe(b.categorical[:, self.user], b.labels, b.label_mask)

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        own = (batch.labels, batch.label_mask) if self.training else None
        item = self.items(batch.categorical[:, self.item], own)  # [B, T]
        user = self.users(batch.categorical[:, self.user], own)  # [B, T]
        base = self.items.link(self.items.prior())
        return ModelOutput(base + self.item_scale * item + self.user_scale * user + self.bias)

    def ignored_inputs(self) -> list[str]:
        keys = {self.schema.item_key, self.schema.user_key}
        others = [n for n in self.schema.token_names if n not in keys]
        seq = ["behaviour sequences"] if self.schema.sequences is not None else []
        return [f"every field but {sorted(keys)} ({len(others)} tokens)", *seq]
