"""The correlation suite: task label correlation and predicted-score correlation."""

from __future__ import annotations

from typing import Any

import numpy as np

from infnet.experiments import figures
from infnet.experiments.report import Report, fmt
from infnet.experiments.runner import load_predictions, ok
from infnet.experiments.suites.context import (
    INFNET,
    Context,
    failures,
    figure_path,
    flag_table,
    run_table,
)
from infnet.metrics import label_correlation


def run(ctx: Context, report: Report) -> dict[str, Any]:
    model = INFNET if not ctx.models or INFNET in ctx.models else ctx.models[0]
    [record] = ctx.runner.run_all([ctx.spec(model, model, {}, ctx.seeds[0])], "correlation")
    section = report.section("Task correlation (source document 4.2.2)")
    tasks = ctx.schema.task_names
    if not ok(record):
        failures(section, [record])
        return {"model": model, "runs": run_table([record])}
    flag_table(section, [record])
    p = load_predictions(record)
    labels = label_correlation(p.labels, p.label_mask)
    scores = label_correlation(p.outputs, np.ones_like(p.label_mask))
    for name, matrix, what in (
        ("labels", labels, "test labels (pairs of present labels)"),
        ("scores", scores, f"predicted scores of {model}, seed {ctx.seeds[0]}"),
    ):
        section.table(
            ["task", *tasks],
            [[t, *(fmt(v, 2) for v in row)] for t, row in zip(tasks, matrix, strict=True)],
            caption=f"Pearson correlation of the {what}",
        )
        path = figures.heatmap(
            matrix,
            tasks,
            tasks,
            f"correlation of {name}",
            figure_path(ctx, f"correlation_{name}"),
            vmin=-1,
            vmax=1,
            cmap="coolwarm",
        )
        section.figure(path, f"Correlation of the {what}")
    return {
        "model": model,
        "seed": ctx.seeds[0],
        "run_dir": record["run_dir"],
        "tasks": tasks,
        "label_correlation": labels,
        "score_correlation": scores,
        "runs": run_table([record]),
    }
