"""The multi-task model contract and the model registry.

Every model is built from `(schema, config)`, where `config` is an instance of the
model's own pydantic `Config` class (unknown keys are errors), and maps a `Batch` to
one output per task:

    forward(batch, seq_index=None) -> ModelOutput(logits [B, N_task], auxiliary_loss)

logits for binary tasks and standardised values z for regression tasks (`TaskActivation`
turns them into what is served and scored). `seq_index` int64 [B] says which history row b reads:
the batch then holds U <= B histories (`seq_ids` [U, F, n, K]), as when a request's
candidates share their user's history. A model that can reuse the work on a history does
it once per history (INFNet); the others gather each row's history first
(`Batch.per_row_histories`). A model with an auxiliary training loss (DIEN's
next-behaviour loss) returns it in training mode; it is part of the output, so it
survives any wrapper (DistributedDataParallel) that only sees what forward returns. A
model that reads counts of the train split (the reference models) gathers them in
`fit_statistics` before training.
Losses and metrics belong to training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar, Literal, NamedTuple

import torch
from pydantic import Field
from torch import nn

from infnet.config import Strict
from infnet.data.batch import Batch
from infnet.data.schema import Schema


class ModelConfig(Strict):
    """Options every model shares; each model subclasses this with its own."""

    embedding_dim: int = 16
    dropout: float = 0.0
    # Initialisation (models/init.py): the feature tables N(0, embedding_std^2) and every
    # nn.Linear Xavier-normal with zero bias, as FuxiCTR and DeepCTR do; "torch" keeps
    # PyTorch's Kaiming-uniform linears.
    embedding_std: float = Field(default=1e-4, gt=0)
    linear_init: Literal["xavier_normal", "torch"] = "xavier_normal"


class SequenceModelConfig(ModelConfig):
    """Options of the models that read behaviour sequences position by position."""

    # s_t = e(item_t) + p_t + r_t: a learned embedding of the position (recency rank) and
    # of the bucketed log time gap between the event and the row (models/embedding.py).
    time_aware: bool = False


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # [B, N_task]: logits of binary tasks, z of regression tasks
    auxiliary_loss: torch.Tensor | None = None  # a training term the trainer adds to its loss


class TaskActivation(nn.Module):
    """logits [B, N_task] -> probabilities for binary tasks, values for regression tasks
    (mean + std * z, the schema's target scale): the one place that knows what a model's
    outputs mean (training's metrics, export, serving)."""

    def __init__(self, schema: Schema) -> None:
        super().__init__()
        self.register_buffer("binary", torch.tensor([t.kind == "binary" for t in schema.tasks]))
        self.register_buffer("mean", torch.tensor([t.mean for t in schema.tasks]))
        self.register_buffer("std", torch.tensor([t.std for t in schema.tasks]))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.where(self.binary, torch.sigmoid(logits), self.mean + self.std * logits)


class MultiTaskModel(nn.Module):
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    name: ClassVar[str] = ""

    def __init__(self, schema: Schema, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, self.Config):
            raise TypeError(
                f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}"
            )
        self.schema = schema
        self.config = config

    def forward(self, batch: Batch, seq_index: torch.Tensor | None = None) -> ModelOutput:
        raise NotImplementedError

    def fit_statistics(self, batches: Iterable[Batch]) -> None:
        """Count what the model reads as statistics of the train split (the reference
        models' label means); the trainer calls it once, before the first step, with the
        train split's batches. A model without statistics leaves them unread."""

    def ignored_inputs(self) -> list[str]:
        """Inputs of the schema this model does not read (logged by the trainer)."""
        return []

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


REGISTRY: dict[str, type[MultiTaskModel]] = {}


def register(name: str) -> Callable[[type[MultiTaskModel]], type[MultiTaskModel]]:
    def wrap(cls: type[MultiTaskModel]) -> type[MultiTaskModel]:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} registered twice")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return wrap
