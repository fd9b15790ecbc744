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
    header, rows = metric_rows(schema, results)
    table = Table(title=title or None)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
