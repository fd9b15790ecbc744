"""Before anything is read: every column a RawDataset names exists where it is read from,
and the spec is consistent (side fields, bags, warm start). Each problem is one
PrepareError naming the frame, column, field or behaviour."""

from __future__ import annotations

from typing import Literal

from infnet.data.spec import FieldSpec, PrepareError, RawDataset

Frame = Literal["log", "users", "items"]


def field_frame(f: FieldSpec, raw: RawDataset, log_cols: set[str]) -> Frame:
    """Where a field's column is read: the key columns and context fields from the log,
    user / item fields from the users / items table, else from the log."""
    src = f.source
    table = {"user": ("users", raw.users), "item": ("items", raw.items)}.get(f.group)
    keys = (raw.user_key, raw.item_key)
    if src not in keys and table and table[1] is not None and src in table[1].columns:
        return table[0]
    if src in log_cols:
        return "log"
    where = f"{table[0]} table or log" if table and table[1] is not None else "log"
    raise PrepareError(f"field {f.name!r} ({f.group}): column {src!r} not found in {where}")


def check_columns(raw: RawDataset, log_cols: set[str]) -> dict[str, Frame]:
    def need(cols: set[str], have: set[str] | list[str], frame: str, what: str) -> None:
        missing = sorted(set(cols) - set(have))
        if missing:
            raise PrepareError(f"{what}: column {missing[0]!r} not found in {frame}")

    need({raw.user_key, raw.item_key, raw.time_column}, log_cols, "log", "keys")
    if raw.users is not None:
        need({raw.user_key}, raw.users.columns, "users table", "user key")
    if raw.items is not None:
        need({raw.item_key}, raw.items.columns, "items table", "item key")
    frames = {f.name: field_frame(f, raw, log_cols) for f in raw.fields}
    if len(frames) != len(raw.fields):
        raise PrepareError(f"duplicate field names: {[f.name for f in raw.fields]}")
    for t in raw.tasks:
        need({t.column}, log_cols, "log", f"task {t.name!r}")
    for b in raw.behaviours:
        cols = {b.column} if b.column is not None else set(b.condition.meta.root_names())
        need(cols, log_cols, "log", f"behaviour {b.name!r}")
    tasks = {t.name for t in raw.tasks}
    for task, col in raw.oracle.items():
        if task not in tasks:
            raise PrepareError(f"oracle for unknown task {task!r} (tasks: {sorted(tasks)})")
        need({col}, log_cols, "log", f"oracle of task {task!r}")
    if raw.split.column is not None:
        need({raw.split.column}, log_cols, "log", "split")
    item_fields = {f.name for f in raw.fields if f.group == "item"}
    for s in raw.side_fields:
        if s not in item_fields:
            raise PrepareError(
                f"side field {s!r} is not an item field (item fields: {sorted(item_fields)})"
            )
    if raw.behaviours and not raw.side_fields:
        raise PrepareError("behaviours are given but no side_fields")
    spec = {f.name: f for f in raw.fields}
    # Events known only by their item id (warm start, pre-built histories) get their side
    # codes through the item key: the item key's own field, or items-table fields.
    by_id = [
        f"behaviour {b.name!r} (pre-built column {b.column!r})" for b in raw.behaviours if b.column
    ]
    if raw.warm_start is not None:
        need(
            {raw.user_key, "behaviour", raw.item_key, raw.time_column},
            raw.warm_start.columns,
            "warm_start",
            "warm start",
        )
        by_id.append("warm-start events")
    for what in by_id:
        for s in raw.side_fields:
            if frames[s] == "log" and spec[s].source != raw.item_key:
                raise PrepareError(
                    f"side field {s!r} is read from log column {spec[s].source!r}; {what} "
                    "can only carry item-table fields and the item key"
                )
    for i, f in enumerate(raw.fields):
        if f.bag is None:
            continue
        first = next(g for g in raw.fields if g.bag == f.bag)
        if f.kind != "categorical" or (frames[f.name], f.group) != (
            frames[first.name],
            first.group,
        ):
            raise PrepareError(
                f"bag {f.bag!r}: field {f.name!r} must be categorical, in the same table and group "
                f"as {first.name!r}"
            )
        if f is not first and raw.fields[i - 1].bag != f.bag:
            raise PrepareError(
                f"bag {f.bag!r}: field {f.name!r} is not next to the bag's other fields"
            )
    return frames
