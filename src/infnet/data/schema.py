"""The Schema of a prepared dataset: which fields, sequences and tasks a model sees.

It is written as `schema.json` in the prepared directory and read back by the loader,
the models, the trainer, the exporter and the server, so it is the one contract between
data preparation and everything downstream.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from infnet.config import Strict

SCHEMA_VERSION = 2  # 2: regression tasks carry their train-split mean and std
PAD = 0  # index 0 is padding in every vocabulary
OOV = 1  # index 1 is out-of-vocabulary: unseen and rare (below min_count) values


class CategoricalField(Strict):
    """One categorical input: a token of INFNet, a column of `Batch.categorical`."""

    name: str
    group: Literal["item", "user", "context"]
    vocab_size: int = Field(ge=2, description="includes PAD (0) and OOV (1)")
    # Numeric columns are bucketized: value -> 2 + searchsorted(boundaries, value, 'right').
    boundaries: list[float] | None = None
    # Columns sharing a `bag` (<bag>_1 .. <bag>_K, adjacent, one vocabulary) are the slots of
    # one multi-valued feature: one embedding table, and ONE token to the models, the mean of
    # its present values' embeddings (PAD slots are empty). None: an ordinary field.
    bag: str | None = None


class SequenceSpec(Strict):
    """Behaviour sequences: F behaviour types, n positions, K side-info fields."""

    behaviours: list[str] = Field(min_length=1)
    # Names of item fields whose embedding tables the sequence positions share: the K
    # columns of Batch.seq_ids. Adjacent slots of one bag are one side token, the mean of
    # its present values, as the bag is one categorical token.
    side_fields: list[str] = Field(min_length=1)
    max_len: int = Field(ge=1)
    # Behaviours from a pre-built history column: every row owns a block of events (its
    # history), so a user's latest history is their latest block, not their last events.
    prebuilt: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _prebuilt_known(self) -> SequenceSpec:
        unknown = sorted(set(self.prebuilt) - set(self.behaviours))
        if unknown:
            raise ValueError(
                f"prebuilt behaviours {unknown} are not in behaviours {self.behaviours}"
            )
        return self


class Task(Strict):
    """A prediction target. A regression model predicts z = (y - mean) / std, y after the
    transform, with the train split's mean and std, so every target starts on the unit
    scale of a logit; `TaskActivation` maps z back to y for metrics, export and serving.
    mean 0, std 1: the raw scale (binary tasks, and `standardise: false`)."""

    name: str
    kind: Literal["binary", "regression"]
    weight: float = Field(default=1.0, ge=0.0)
    transform: Literal["none", "log1p"] = "none"
    mean: float = 0.0
    std: float = Field(default=1.0, gt=0.0)

    @model_validator(mode="after")
    def _binary_unscaled(self) -> Task:
        if self.kind == "binary" and (self.mean, self.std) != (0.0, 1.0):
            raise ValueError(f"task {self.name!r}: a binary task has no mean and std")
        return self


class Split(Strict):
    name: Literal["train", "valid", "test"]
    rows: int = Field(ge=0)
    time_min: int | None = None  # time_ms of the first and last row of the split
    time_max: int | None = None


class Schema(Strict):
    version: int = SCHEMA_VERSION
    dataset: str
    fields: list[CategoricalField] = Field(min_length=1)
    sequences: SequenceSpec | None = None
    tasks: list[Task] = Field(min_length=1)
    user_key: str = "user_id"
    item_key: str = "video_id"
    time_column: str = "time_ms"
    splits: list[Split] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Schema:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate field names in schema: {names}")
        if self.sequences is not None:
            item_fields = {f.name for f in self.fields if f.group == "item"}
            missing = [s for s in self.sequences.side_fields if s not in item_fields]
            if missing:
                raise ValueError(
                    f"sequence side_fields {missing} are not item fields of the schema"
                )
        for bag, cols in self._bags().items():
            members = [self.fields[i] for i in cols]
            if cols != list(range(cols[0], cols[0] + len(cols))):
                raise ValueError(
                    f"bag {bag!r}: its fields {[f.name for f in members]} are not adjacent"
                )
            if len({(f.vocab_size, f.group) for f in members}) != 1:
                raise ValueError(
                    f"bag {bag!r}: its fields {[f.name for f in members]} differ in vocab_size or group"
                )
        tokens = self.token_names
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"duplicate categorical token names (fields and bags): {tokens}")
        tasks = [t.name for t in self.tasks]
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"duplicate task names in schema: {tasks}")
        return self

    # --- derived views -------------------------------------------------------------------
    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def num_fields(self) -> int:  # M: columns of Batch.categorical (a bag has one per slot)
        return len(self.fields)

    def _bags(self) -> dict[str, list[int]]:
        bags: dict[str, list[int]] = {}
        for i, f in enumerate(self.fields):
            if f.bag is not None:
                bags.setdefault(f.bag, []).append(i)
        return bags

    @property
    def token_columns(self) -> list[list[int]]:
        """Columns of Batch.categorical behind each categorical token, in field order: [i]
        for an ordinary field, the slots of a bag for a bag."""
        tokens: list[list[int]] = []
        for i, f in enumerate(self.fields):
            if f.bag is not None and i and self.fields[i - 1].bag == f.bag:
                tokens[-1].append(i)
            else:
                tokens.append([i])
        return tokens

    @property
    def token_names(self) -> list[str]:
        """One name per categorical token: the field's, or the bag's."""
        return [self.fields[c[0]].bag or self.fields[c[0]].name for c in self.token_columns]

    @property
    def num_categorical_tokens(self) -> int:  # M_tok <= M: what models embed and attend over
        return len(self.token_columns)

    @property
    def side_tokens(self) -> list[list[int]]:
        """Positions k of seq_ids' side columns behind each side token: [k] for a field,
        the slots of a bag (the target item's side tokens follow the same grouping)."""
        if self.sequences is None:
            return []
        groups: list[list[int]] = []
        previous = None
        for k, name in enumerate(self.sequences.side_fields):
            bag = self.field(name).bag
            if bag is not None and bag == previous:
                groups[-1].append(k)
            else:
                groups.append([k])
            previous = bag
        return groups

    @property
    def num_side_tokens(self) -> int:  # K_tok <= K: the side embeddings a position gives models
        return len(self.side_tokens)

    @property
    def num_behaviours(self) -> int:  # F
        return 0 if self.sequences is None else len(self.sequences.behaviours)

    @property
    def num_tasks(self) -> int:  # N_task
        return len(self.tasks)

    def field(self, name: str) -> CategoricalField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"no field {name!r} in schema (fields: {self.field_names})")

    def field_index(self, name: str) -> int:
        return self.field_names.index(self.field(name).name)

    def split(self, name: str) -> Split:
        for s in self.splits:
            if s.name == name:
                return s
        raise KeyError(f"no split {name!r} in schema (splits: {[s.name for s in self.splits]})")

    # --- JSON round trip -----------------------------------------------------------------
    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> Schema:
        return cls.model_validate_json(text)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Schema:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"schema file not found: {path}")
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not a readable schema file ({err})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: not a schema (a JSON object is expected)")
        if raw.get("version") != SCHEMA_VERSION:
            raise ValueError(
                f"{path}: schema version {raw.get('version')!r} is not supported "
                f"(this infnet reads version {SCHEMA_VERSION}); prepare the dataset again"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ValueError(f"{path}: not a valid schema ({where}: {first['msg']})") from None


def schema_differences(saved: Schema, current: Schema) -> list[str]:
    """What a model trained on `saved` would get wrong on data described by `current`."""
    diffs = []
    a, b = {f.name: f for f in saved.fields}, {f.name: f for f in current.fields}
    if list(a) != list(b):
        diffs.append(
            f"fields differ: only in checkpoint {sorted(set(a) - set(b))}, only in data {sorted(set(b) - set(a))}"
            if set(a) != set(b)
            else "field order differs"
        )
    diffs += [
        f"field {n!r}: vocab_size {a[n].vocab_size} in checkpoint, {b[n].vocab_size} in data"
        for n in a
        if n in b and a[n].vocab_size != b[n].vocab_size
    ]
    diffs += [
        f"field {n!r}: bucket boundaries differ"
        for n in a
        if n in b and a[n].boundaries != b[n].boundaries
    ]
    if saved.sequences != current.sequences:
        diffs.append(
            f"sequences differ: {saved.sequences} in checkpoint, {current.sequences} in data"
        )
    if [(t.name, t.kind) for t in saved.tasks] != [(t.name, t.kind) for t in current.tasks]:
        diffs.append(
            f"tasks differ: {[t.name for t in saved.tasks]} in checkpoint, {[t.name for t in current.tasks]} in data"
        )
    else:
        diffs += [
            f"task {a.name!r}: target scale (mean {a.mean:.6g}, std {a.std:.6g}, {a.transform}) in "
            f"checkpoint, (mean {b.mean:.6g}, std {b.std:.6g}, {b.transform}) in data"
            for a, b in zip(saved.tasks, current.tasks, strict=True)
            if (a.mean, a.std, a.transform) != (b.mean, b.std, b.transform)
        ]
    return diffs
