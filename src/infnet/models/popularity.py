"""Popularity: the item's shrunk train-split label mean, the first floor a model must beat.

For task t and the row's item v (layers/shrunk_means.py for mean and link g: logit for
binary tasks, the standardised z for regression tasks),

    y_t = g(p_t) + a_t (g(mean[v, t]) - g(p_t)) + b_t,        a_t = 1, b_t = 0 at the start

so before any step it is the shrunk positive rate (or mean value) of the item at the
train split's end, and the two scalars per task are a calibration trained like any
model's weights. The counts come from `fit_statistics` (every train row, once); a train
row's own label is left out of its count, a valid or test row reads the train counts, so
nothing after the training cut-off is read: what a lookup table refreshed at the cut-off
would score.

Ignored inputs: every field but the item key, and the behaviour sequences. The embedding
size and dropout are not used.
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


@register("popularity")
class Popularity(MultiTaskModel):
    class Config(ModelConfig):
        prior_strength: float = Field(default=20.0, gt=0)  # m: pseudo-rows of the global mean

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        T = schema.num_tasks
        self.item = key_column(schema, schema.item_key, "popularity")
        self.items = ShrunkMeans(
            schema.field(schema.item_key).vocab_size, schema.tasks, config.prior_strength
        )
        self.scale = nn.Parameter(torch.ones(T))  # a
        self.bias = nn.Parameter(torch.zeros(T))  # b

    def fit_statistics(self, batches: Iterable[Batch]) -> None:
        for b in batches:
            self.items.observe(b.categorical[:, self.item], b.labels, b.label_mask)

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        own = (batch.labels, batch.label_mask) if self.training else None
        item = self.items(batch.categorical[:, self.item], own)  # [B, T]
        return ModelOutput(self.items.link(self.items.prior()) + self.scale * item + self.bias)

    def ignored_inputs(self) -> list[str]:
        others = [n for n in self.schema.token_names if n != self.schema.item_key]
        seq = ["behaviour sequences"] if self.schema.sequences is not None else []
        return [f"every field but {self.schema.item_key!r} ({len(others)} tokens)", *seq]
