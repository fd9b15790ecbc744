"""Per-task metric tables, as rich tables for the terminal and Markdown for reports."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from infnet.data.schema import Schema

BINARY = ("auc", "gauc", "logloss")
REGRESSION = ("mae", "rmse", "r2")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def metric_rows(
    schema: Schema, results: dict[str, dict[str, Any]]
) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per run (model), columns task/metric plus MTL averages."""
    header = ["model"]
    for t in schema.tasks:
        header += [f"{t.name} {m}" for m in (BINARY if t.kind == "binary" else REGRESSION)]
    header += ["MTL-AUC", "MTL-gAUC"]
    rows = []
    for name, m in results.items():
        row = [name]
        for t in schema.tasks:
            row += [
                _fmt(m.get(t.name, {}).get(k))
                for k in (BINARY if t.kind == "binary" else REGRESSION)
            ]
        row += [_fmt(m.get("mtl_auc")), _fmt(m.get("mtl_gauc"))]
        rows.append(row)
    return header, rows


def rich_table(schema: Schema, results: dict[str, dict[str, Any]], title: str = "") -> Table:
    """One row per model and task (narrow enough for a terminal), then the MTL averages."""
    columns = ["AUC", "gAUC", "LogLoss", "MAE", "RMSE", "R2"]
    keys = ["auc", "gauc", "logloss", "mae", "rmse", "r2"]
    table = Table(title=title or None)
    for i, h in enumerate(["model", "task", *columns]):
        table.add_column(h, justify="left" if i < 2 else "right")
    for name, m in results.items():
        for t in schema.tasks:
            table.add_row(name, t.name, *[_fmt(m.get(t.name, {}).get(k)) for k in keys])
        if "mtl_auc" in m:
            table.add_row(
                name,
                "MTL",
                _fmt(m.get("mtl_auc")),
                _fmt(m.get("mtl_gauc")),
                *[""] * 4,
                end_section=True,
            )
    return table


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
