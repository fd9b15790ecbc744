"""LR: logistic (for regression tasks: linear) regression over one-hot fields, per task.

The floor every other model must beat. For task t (no paper needed, but in the notation
of Rendle 2010's first-order term):

    y_t = w0_t + sum_i w_t[field_i, x_i]                                   (one-hot fields)
               + sum_{f,k} mean_{p valid} w_t[behaviour f, side field k, s_{f,p,k}]

`LinearTerm.fields` holds w_t[field_i, .] as one [vocab_i, N_task] table per field, so all
tasks share nothing but the input; a bag (a multi-valued field, schema `bag`) is one table
and contributes the mean of its present values' weights. The history term is a bag of ids per behaviour type and
side field (the clicked videos, their authors, ...), mean-pooled over the valid positions so
it does not grow with history length; `use_history=False` drops it.

Ignored inputs: the order of the behaviour sequences (a bag of ids); with
`use_history=False`, the sequences altogether. The embedding size is not used.
"""

from __future__ import annotations

import torch

from infnet.data.batch import Batch
from infnet.data.schema import Schema
from infnet.models.base import ModelConfig, ModelOutput, MultiTaskModel, register
from infnet.models.layers.linear import LinearTerm


@register("lr")
class LR(MultiTaskModel):
    class Config(ModelConfig):
        use_history: bool = True

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__(schema, config)
        self.linear = LinearTerm(schema, schema.num_tasks, config.use_history)

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        batch = batch.per_row_histories(seq_index)
        return ModelOutput(self.linear(batch))

    def ignored_inputs(self) -> list[str]:
        if self.schema.sequences is None:
            return []
        if not self.config.use_history:
            return ["behaviour sequences (use_history=False)"]
        return ["order of the behaviour sequences (read as mean-pooled bags of ids)"]
