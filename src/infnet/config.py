"""Typed configuration: strict pydantic models, YAML in and out, `--set key=value` overrides.

A misspelt key is an error that names the key and the closest valid one; nothing is
silently ignored.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    pass


class Strict(BaseModel):
    """Base of every schema and config model: unknown keys are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=False)


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a union (Annotated and Optional unwrapped), else [annotation]."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is UnionType:
        return [m for a in get_args(annotation) for m in _members(a)]
    return [annotation]


def _tags(cls: type[BaseModel]) -> set[Any]:
    """The Literal values of a model's fields: what a discriminated union's error path names."""
    return {
        v
        for f in cls.model_fields.values()
        if get_origin(f.annotation) is Literal
        for v in get_args(f.annotation)
    }


def _valid_keys(cls: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the (nested) model at `loc`, through dicts, lists and (tagged)
    unions: columns.<name>.<type tag>.<key> names a Categorical's keys."""
    current: list[Any] = [cls]
    for part in loc[:-1]:
        step: list[Any] = []
        for node in (m for c in current for m in _members(c)):
            origin = get_origin(node)
            if isinstance(node, type) and issubclass(node, BaseModel):
                if part in node.model_fields:
                    step.append(node.model_fields[part].annotation)
                elif part in _tags(node):
                    step.append(node)  # the tag pydantic puts in the path of a union member
            elif origin is dict:
                step.append(get_args(node)[1])
            elif origin in (list, tuple):
                step.extend(get_args(node)[:1])
        current = step
    models = [
        m for c in current for m in _members(c) if isinstance(m, type) and issubclass(m, BaseModel)
    ]
    return sorted({k for m in models for k in m.model_fields})


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
