"""Typed configuration: strict pydantic models, YAML in and out, `--set key=value` overrides.

A misspelt key is an error that names the key and the closest valid one; nothing is
silently ignored.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    pass


class Strict(BaseModel):
    """Base of every schema and config model: unknown keys are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=False)


def _valid_keys(cls: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the (nested) model at `loc`."""
    current: Any = cls
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if (
            field is None
            or not isinstance(field.annotation, type)
            or not issubclass(field.annotation, BaseModel)
        ):
            return []
        current = field.annotation
    return list(current.model_fields) if isinstance(current, type) else []


def validate(cls: type[M], data: dict[str, Any], where: str = "config") -> M:
    """`cls.model_validate(data)` with one clear message per wrong key."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                close = difflib.get_close_matches(
                    str(e["loc"][-1]), _valid_keys(cls, e["loc"]), n=1
                )
                hint = f"; did you mean {close[0]!r}?" if close else ""
                lines.append(f"{where}: unknown key {key!r}{hint}")
            else:
                lines.append(f"{where}: {key}: {e['msg']} (got {e.get('input')!r})")
        raise ConfigError("\n".join(lines)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` strings (value parsed as YAML: numbers, booleans, lists)."""
    data = {**data}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[parts[-1]] = yaml.safe_load(value)
    return data
