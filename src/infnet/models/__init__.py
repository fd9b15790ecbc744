"""Models. Importing this package registers every model (see `base.register`) and gives the
registry's lookups."""

import difflib
import importlib
import pkgutil

from infnet.data.schema import Schema
from infnet.models.base import REGISTRY, ModelConfig, MultiTaskModel, register
from infnet.models.init import initialise_linears

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in {"base", "checkpoint", "embedding", "init", "layers"}:
        importlib.import_module(f"{__name__}.{_module.name}")


def available_models() -> list[str]:
    return sorted(REGISTRY)


def model_class(name: str) -> type[MultiTaskModel]:
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown model {name!r}{hint}; known models: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def build_model(
    name: str, schema: Schema, config: dict | ModelConfig | None = None
) -> MultiTaskModel:
    cls = model_class(name)
    if not isinstance(config, ModelConfig):
        config = cls.Config.model_validate(config or {})
    model = cls(schema, config)
    initialise_linears(model, config.linear_init)
    return model


__all__ = ["MultiTaskModel", "available_models", "build_model", "model_class", "register"]
