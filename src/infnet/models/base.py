"""The multi-task model contract and the model registry.

Every model is built from `(schema, config)`, where `config` is an instance of the
model's own pydantic `Config` class (unknown keys are errors), and maps a `Batch` to
one output per task: `forward(batch) -> [B, N_task]`, logits for binary tasks and
values for regression tasks. Losses, sigmoids and metrics belong to the trainer.

A model that adds an auxiliary training loss (DIEN's next-behaviour loss) sets
`self.auxiliary_loss` during a training forward; the trainer adds it to the task loss.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from infnet.data.batch import Batch
from infnet.data.schema import Schema, Strict


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


_REGISTRY: dict[str, type[MultiTaskModel]] = {}


def register(name: str) -> Callable[[type[MultiTaskModel]], type[MultiTaskModel]]:
    def wrap(cls: type[MultiTaskModel]) -> type[MultiTaskModel]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_all() -> None:
    # Importing the package registers every model it holds.
    import infnet.models  # noqa: F401


def available_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def model_class(name: str) -> type[MultiTaskModel]:
    _load_all()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(
            f"unknown model {name!r}{hint}; known models: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def build_model(
    name: str, schema: Schema, config: dict | ModelConfig | None = None
) -> MultiTaskModel:
    cls = model_class(name)
    if not isinstance(config, ModelConfig):
        config = cls.Config.model_validate(config or {})
    return cls(schema, config)
