"""The multi-task model contract and the model registry.

Every model is built from `(schema, config)`, where `config` is an instance of the
model's own pydantic `Config` class (unknown keys are errors), and maps a `Batch` to
one output per task: `forward(batch) -> [B, N_task]`, logits for binary tasks and
values for regression tasks. Losses, sigmoids and metrics belong to the trainer.

A model that adds an auxiliary training loss (DIEN's next-behaviour loss) sets
`self.auxiliary_loss` during a training forward; the trainer adds it to the task loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from infnet.config import Strict
from infnet.data.batch import Batch
from infnet.data.schema import Schema


class ModelConfig(Strict):
    """Options every model shares; each model subclasses this with its own."""

    embedding_dim: int = 16
    dropout: float = 0.0


class MultiTaskModel(nn.Module):
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    name: ClassVar[str] = ""
    # True: forward(batch, seq_index) reads U <= B distinct histories, row b history
    # seq_index[b] (serving scores many candidates of one user; see serving/export.py)
    shared_histories: ClassVar[bool] = False

    def __init__(self, schema: Schema, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, self.Config):
            raise TypeError(
                f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}"
            )
        self.schema = schema
        self.config = config
        self.auxiliary_loss: torch.Tensor | None = None

    def forward(self, batch: Batch) -> torch.Tensor:  # [B, N_task]
        raise NotImplementedError

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
