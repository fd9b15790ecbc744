"""Schema: JSON round trip and the validation errors that name what is wrong."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from tests.helpers import make_schema

from infnet.data.schema import CategoricalField, Schema, Split, Task


def test_json_round_trip(tmp_path):
    schema = make_schema()
    schema.fields[5] = CategoricalField(
        name="hour", group="context", vocab_size=6, boundaries=[0.5, 1e-3, 7.25]
    )
    schema.splits = [
        Split(name="train", rows=10, time_min=1, time_max=9),
        Split(name="test", rows=0),
    ]
    assert Schema.from_json(schema.to_json()) == schema
    schema.save(tmp_path / "schema.json")
    back = Schema.load(tmp_path / "schema.json")
    assert back == schema and back.field("hour").boundaries == [0.5, 1e-3, 7.25]
    assert (back.num_fields, back.num_behaviours, back.num_tasks) == (6, 3, 3)
    assert back.field_index("age") == 4 and back.split("train").rows == 10
    assert Schema.from_json(make_schema(num_behaviours=0).to_json()).sequences is None


def test_unknown_and_duplicate_keys_are_errors():
    raw = json.loads(make_schema().to_json())
    with pytest.raises(ValidationError, match="vocab_sise"):
        Schema.model_validate(raw | {"fields": [raw["fields"][0] | {"vocab_sise": 3}]})
    with pytest.raises(ValidationError, match="duplicate field names"):
        Schema.model_validate(raw | {"fields": [raw["fields"][0], raw["fields"][0]]})
    with pytest.raises(ValidationError, match="duplicate task names"):
        Schema.model_validate(raw | {"tasks": [raw["tasks"][0], raw["tasks"][0]]})
    with pytest.raises(ValidationError, match=r"side_fields \['age'\] are not item fields"):
        Schema.model_validate(
            raw | {"sequences": raw["sequences"] | {"side_fields": ["video_id", "age"]}}
        )
    with pytest.raises(ValidationError, match="vocab_size"):
        CategoricalField(name="x", group="item", vocab_size=1)  # PAD and OOV need 2
    with pytest.raises(ValidationError, match="kind"):
        Task(name="t", kind="ranking")


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="schema file not found"):
        Schema.load(tmp_path / "schema.json")
    raw = json.loads(make_schema().to_json()) | {"version": 0}
    (tmp_path / "schema.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"schema.json: schema version 0 is not supported"):
        Schema.load(tmp_path / "schema.json")
    with pytest.raises(KeyError, match="no field 'nope'"):
        make_schema().field("nope")


def test_a_binary_task_has_no_scale_and_a_changed_scale_is_a_difference():
    from infnet.data.schema import Task, schema_differences

    with pytest.raises(ValueError, match="a binary task has no mean and std"):
        Task(name="click", kind="binary", std=2.0)
    with pytest.raises(ValueError):
        Task(name="watch", kind="regression", std=0.0)
    a = make_schema()
    tasks = [
        t if t.kind == "binary" else t.model_copy(update={"mean": 3.0, "std": 2.0}) for t in a.tasks
    ]
    b = a.model_copy(update={"tasks": tasks})
    assert schema_differences(a, b) == [
        "task 'watch': target scale (mean 0, std 1, none) in checkpoint, (mean 3, std 2, none) in data"
    ]
