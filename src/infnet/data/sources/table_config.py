"""The YAML of `infnet prepare table` as strict pydantic models (an unknown key, column type
or task kind is an error naming it), and reading the input files it names."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Literal

import polars as pl
from pydantic import Field, model_validator

from infnet.config import Strict, load_yaml, validate
from infnet.data.sources.files import Format, expand, read_files

Group = Literal["item", "user", "context"]
Policy = Literal["drop", "oov"]
TIME_MS = "__time_ms"
SPLIT_CODE = "__split"


def ms(value: date | datetime) -> int:
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


class Input(Strict):
    path: str | list[str]  # file names or globs, relative to the YAML's folder (or --data-dir)
    format: Format | None = None  # default: from the file suffix
    separator: str | None = None  # csv: "," (tsv: tab); may be longer than one character
    encoding: str = "utf8"
    header: bool = True
    names: list[str] | None = None  # column names of a file without a header
    key: str | None = None  # users / items: the join column, default user_key / item_key


class Inputs(Strict):
    log: Input
    users: Input | None = None
    items: Input | None = None


class Time(Strict):
    column: str | None = None
    unit: Literal["auto", "s", "ms", "us", "ns", "datetime"] = "auto"
    format: str | None = None  # strptime format of a datetime string, default: inferred
    row_order: bool = False  # no timestamp: the row order of the log is the time order

    @model_validator(mode="after")
    def _one(self) -> Time:
        if (self.column is None) == (not self.row_order):
            raise ValueError("give either `column` or `row_order: true`")
        return self


class _Column(Strict):
    column: str | None = None  # source column, default: the key
    group: Group | None = None  # default: item / user from the table the column is in, else context


class Categorical(_Column):
    type: Literal["categorical"]
    # A value needs this many train log rows to get its own index, else it is OOV; a
    # users / items column counts the train log rows of the entities that carry the value.
    min_count: int = Field(default=1, ge=1)


class Numeric(_Column):
    type: Literal["numeric"]
    buckets: Literal["quantile", "log"] = "quantile"
    num_buckets: int = Field(default=16, ge=2)
    on_unparseable: Policy | None = None  # default: the top-level policy


class MultiCategorical(_Column):
    """Several values in one cell (a list, or a string with a separator), e.g. genres
        `Action|Comedy`: a pooled bag. The first max_values distinct values fill the slot
        fields <name>_1 .. <name>_K (PAD where a row has fewer, OOV in the first slot where it
        has none); the slots share one vocabulary and the models see one token, the mean of
        the present values' embeddings (schema field `bag`); named in `sequences.side_fields`,
    the bag rides every history position whole, pooled the same way. `pooled: false` is for an ordered
        list such as a category path: K independent fields, each its own vocabulary and token
        (the first K values in order, OOV where a row has fewer)."""

    type: Literal["multi_categorical"]
    separator: str = "|"
    max_values: int = Field(default=3, ge=1)
    min_count: int = Field(default=1, ge=1)  # train log rows carrying the value, any slot
    pooled: bool = True


Column = Annotated[Categorical | Numeric | MultiCategorical, Field(discriminator="type")]


class Behaviour(Strict):
    """Either built from the log (`condition`: which rows are events of this behaviour;
    "true", the default, is every row), or pre-built (`column`: a log column holding each
    row's own history of item ids, a list or a string with `separator`)."""

    condition: str | None = None
    column: str | None = None
    separator: str = "|"
    most_recent: Literal["last", "first"] = "last"  # where the column puts the latest id
    max_len: int | None = Field(default=None, ge=1)  # keep the latest; default sequences.max_len
    on_unparseable: Policy | None = None  # an id that is not an integer, where ids are

    @model_validator(mode="after")
    def _kind(self) -> Behaviour:
        if self.condition is not None and self.column is not None:
            raise ValueError("give either `condition` (built from the log) or `column` (pre-built)")
        column_only = {"separator", "most_recent", "max_len", "on_unparseable"}
        if self.column is None and self.model_fields_set & column_only:
            raise ValueError(
                f"{sorted(self.model_fields_set & column_only)} apply to a pre-built `column` only"
            )
        return self


class Sequences(Strict):
    side_fields: list[str] = Field(min_length=1)  # item columns each position carries
    max_len: int = Field(default=50, ge=1)
    behaviours: dict[str, Behaviour] = Field(min_length=1)


class Binary(Strict):
    kind: Literal["binary"]
    column: str
    threshold: float | None = None  # label = column >= threshold; default: the column is 0/1
    weight: float = Field(default=1.0, ge=0.0)


class Regression(Strict):
    kind: Literal["regression"]
    column: str
    transform: Literal["none", "log1p"] = "none"
    weight: float = Field(default=1.0, ge=0.0)
    standardise: bool = True  # learn (y - mean) / std, the train split's, after the transform


TaskConfig = Annotated[Binary | Regression, Field(discriminator="kind")]


class Split(Strict):
    ratios: tuple[float, float, float] | None = None  # of the time-ordered rows
    valid_start: date | datetime | None = None  # first instant of valid / test (UTC)
    test_start: date | datetime | None = None
    column: str | None = None  # a column naming each row's split
    values: dict[Literal["train", "valid", "test"], str] = {
        "train": "train",
        "valid": "valid",
        "test": "test",
    }

    @model_validator(mode="after")
    def _one(self) -> Split:
        dates = (self.valid_start is not None, self.test_start is not None)
        if dates[0] != dates[1]:
            raise ValueError("give both valid_start and test_start")
        if dates[0] and ms(self.test_start) <= ms(self.valid_start):
            raise ValueError("test_start must be after valid_start")
        if sum([self.ratios is not None, dates[0], self.column is not None]) > 1:
            raise ValueError("give one of ratios, valid_start/test_start, column")
        return self


class TableConfig(Strict):
    name: str
    inputs: Inputs
    user_key: str
    item_key: str
    time: Time
    columns: dict[str, Column] = Field(min_length=1)
    sequences: Sequences | None = None
    tasks: dict[str, TaskConfig] = Field(min_length=1)
    split: Split = Split()
    on_unparseable: Policy = "oov"
    dedupe: bool = False  # drop exact duplicate log rows


def load_config(path: str | Path) -> TableConfig:
    return validate(TableConfig, load_yaml(path), where=str(path))


def input_files(cfg: TableConfig, base: Path) -> list[Path]:
    """Every file the YAML's inputs name (globs expanded)."""
    files = []
    for name in ("log", "users", "items"):
        spec: Input | None = getattr(cfg.inputs, name)
        if spec is not None:
            paths = [spec.path] if isinstance(spec.path, str) else spec.path
            files += expand(paths, base, f"inputs.{name}")
    return files


def read_inputs(cfg: TableConfig, base: Path) -> dict[str, pl.DataFrame]:
    """The log and side tables the YAML names, read from `base`."""
    out = {}
    for name in ("log", "users", "items"):
        spec: Input | None = getattr(cfg.inputs, name)
        if spec is None:
            continue
        paths = [spec.path] if isinstance(spec.path, str) else spec.path
        out[name] = read_files(
            paths,
            base,
            f"inputs.{name}",
            spec.format,
            spec.separator,
            spec.encoding,
            spec.header,
            spec.names,
        )
    return out
