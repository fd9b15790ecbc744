"""The search space of `infnet experiment tune`: one space and one budget for every model.

A space file (YAML or JSON) names ranges and choices; each key is a TrainConfig field
(lr, batch_size, embedding_l2, ...) or a field of the model's own Config (embedding_dim,
dropout, num_experts, ...), told apart by name:

    lr: {low: 1.0e-4, high: 3.0e-3, log: true}
    embedding_dim: {choices: [16, 32, 64]}
    models:                      # only where a model has its own key hyper-parameter
      mmoe: {num_experts: {choices: [4, 8]}}
    variants:                    # a model with fixed options, tuned as a study of its own
      infnet_v2: {model: infnet, options: {preset: v2}}

The default space (DEFAULT_SPACE) is the field's usual one: learning rate log-uniform,
embedding size, dropout, L2 on the embedding tables and batch size for every model, plus
the block count of INFNet and the expert count of the expert models, and INFNet's v2
preset as the variant `infnet_v2` beside `infnet` (v1, the default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from pydantic import Field, model_validator

from infnet.config import Strict, load_yaml, validate
from infnet.models import model_class
from infnet.training.config import TrainConfig


class Range(Strict):
    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _non_empty(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"empty or inverted range: low {self.low} >= high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


class Choice(Strict):
    choices: list[Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _scalars(self) -> Choice:
        # what Optuna's categorical distribution can store (not lists such as hidden sizes)
        bad = [c for c in self.choices if not isinstance(c, (bool, int, float, str))]
        if bad:
            raise ValueError(f"choices must be numbers, strings or booleans, got {bad[0]!r}")
        return self


Param = Range | Choice


class Variant(Strict):
    """A tuned entry that is a model with fixed options (INFNet's v2 preset), tuned as a
    study of its own under its label."""

    model: str
    options: dict[str, Any] = Field(default_factory=dict)


class Space(Strict):
    params: dict[str, Param] = Field(default_factory=dict)  # every model
    models: dict[str, dict[str, Param]] = Field(default_factory=dict)  # model -> its own keys
    variants: dict[str, Variant] = Field(default_factory=dict)  # label -> model and options

    def model_of(self, label: str) -> str:
        return self.variants[label].model if label in self.variants else label

    def fixed(self, label: str) -> dict[str, Any]:
        return dict(self.variants[label].options) if label in self.variants else {}

    def for_model(self, label: str) -> dict[str, Param]:
        """The keys a study samples: every model's, its model's own, the label's own."""
        own = self.models.get(label, {}) if label in self.variants else {}
        return {**self.params, **self.models.get(self.model_of(label), {}), **own}


DEFAULT_SPACE = Space(
    params={
        "lr": Range(low=1e-4, high=3e-3, log=True),
        "embedding_dim": Choice(choices=[16, 32, 64]),
        "dropout": Range(low=0.0, high=0.3),
        "embedding_l2": Range(low=1e-8, high=1e-4, log=True),
        "batch_size": Choice(choices=[1024, 2048, 4096]),
    },
    models={
        "infnet": {"num_blocks": Choice(choices=[1, 2, 3])},
        "mmoe": {"num_experts": Choice(choices=[4, 8])},
        "omoe": {"num_experts": Choice(choices=[4, 8])},
    },
    variants={"infnet_v2": Variant(model="infnet", options={"preset": "v2"})},
)


def load_space(path: str | Path) -> Space:
    raw = load_yaml(path)  # YAML is a superset of JSON
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a search space is a mapping of keys to ranges or choices")
    models = raw.pop("models", {}) or {}
    variants = raw.pop("variants", {}) or {}
    return validate(Space, {"params": raw, "models": models, "variants": variants}, where=str(path))


def check_space(space: Space, models: list[str], where: str = "search space") -> None:
    """Every key of the space is a TrainConfig field or a field of each model's Config it
    applies to; an unknown key lists the valid ones."""
    train_keys = set(TrainConfig.model_fields) - {"seed"}
    for label in models:
        try:
            model = model_class(space.model_of(label)).Config
        except KeyError as err:
            variants = f"; variants: {', '.join(space.variants)}" if space.variants else ""
            raise KeyError(f"{err.args[0]}{variants}") from None
        model_keys = set(model.model_fields)
        for key in space.for_model(label):
            if key not in train_keys | model_keys:
                raise ValueError(
                    f"{where}: unknown key {key!r} for model {label}; train keys: "
                    f"{', '.join(sorted(train_keys))}; {label} keys: {', '.join(sorted(model_keys))}"
                )
    for label in space.models:
        if label not in space.variants:
            model_class(label)  # an unknown model lists the known ones
    for variant in space.variants.values():
        model_class(variant.model)


def suggest(trial: optuna.Trial, space: Space, label: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """One trial's (model options, train overrides): the label's fixed options and the keys
    drawn from the space."""
    options: dict[str, Any] = space.fixed(label)
    train: dict[str, Any] = {}
    for key, param in space.for_model(label).items():
        if isinstance(param, Choice):
            value = trial.suggest_categorical(key, param.choices)
        elif param.integer:
            value = trial.suggest_int(key, int(param.low), int(param.high), log=param.log)
        else:
            value = trial.suggest_float(key, param.low, param.high, log=param.log)
        (train if key in TrainConfig.model_fields else options)[key] = value
    return options, train


def defaults(space: Space, label: str) -> dict[str, Any]:
    """The label's default configuration as a point of its space (the params of a trial):
    each key's TrainConfig or model Config default, a number outside its range moved to the
    nearer bound (embedding_l2 0 -> the log range's low, 1e-8: no penalty to speak of); a
    default that no choice holds is left for the sampler."""
    config = model_class(space.model_of(label)).Config(**space.fixed(label))
    train = TrainConfig()
    point: dict[str, Any] = {}
    for key, param in space.for_model(label).items():
        value = getattr(train if key in TrainConfig.model_fields else config, key)
        if isinstance(param, Choice):
            if value in param.choices:
                point[key] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = min(max(value, param.low), param.high)
            point[key] = int(value) if param.integer else float(value)
    return point
