"""Models. Importing this package registers every model (see `base.register`)."""

import importlib
import pkgutil

from infnet.models.base import MultiTaskModel, available_models, build_model, model_class, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in {"base", "embedding", "layers"}:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MultiTaskModel", "available_models", "build_model", "model_class", "register"]
