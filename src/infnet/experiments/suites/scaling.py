"""The scaling suite (revised paper's scaling study): test AUC against forward FLOPs per
sample as the width d and the depth grow, INFNet (preset v2) against WuKong, the
model built to scale (Zhang et al. 2024). FLOPs are counted by torch.utils.flop_counter on
one test batch (matrix products and attention; elementwise work not counted)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from infnet.experiments import figures
from infnet.experiments.measure import forward_flops
from infnet.experiments.report import Report, fmt, fmt_mean_std
from infnet.experiments.suites.context import (
    Context,
    by_label,
    failures,
    figure_path,
    flag_table,
    metric,
    run_table,
    summary,
)
from infnet.models import build_model

WIDTHS = [16, 32, 64]
DEPTHS = [1, 2, 4]
QUICK_WIDTHS, QUICK_DEPTHS = [16, 32], [1, 2]
# model -> the option that sets its depth, and the model's other options
MODELS = {"infnet": "num_blocks", "wukong": "num_layers"}
BASE: dict[str, dict[str, Any]] = {"infnet": {"preset": "v2"}, "wukong": {}}


def run(ctx: Context, report: Report) -> dict[str, Any]:
    widths, depths = (QUICK_WIDTHS, QUICK_DEPTHS) if ctx.quick else (WIDTHS, DEPTHS)
    grid = [
        (model, d, depth, {**BASE[model], "embedding_dim": d, option: depth})
        for model, option in MODELS.items()
        for d in widths
        for depth in depths
    ]
    label = "{} d={} depth={}".format
    specs = [ctx.spec(label(m, d, k), m, o, s) for m, d, k, o in grid for s in ctx.grid_seeds]
    groups = by_label(ctx.runner.run_all(specs, "scaling"))
    batch = ctx.data.batch_at("test", np.arange(min(256, ctx.data.num_rows("test"))))
    section = report.section("Scaling: test AUC against forward FLOPs per sample")
    section.text(
        f"Width d in {widths} x depth in {depths} (INFNet: blocks, WuKong: layers), "
        f"{len(ctx.grid_seeds)} seed(s) {ctx.grid_seeds}; FLOPs per sample of one forward over "
        f"{len(batch)} test rows (torch.utils.flop_counter)."
    )
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODELS}
    rows = []
    for m, d, depth, opts in grid:
        rs = groups[label(m, d, depth)]
        torch.manual_seed(0)
        model = build_model(m, ctx.schema, opts)
        entry = {
            "options": opts,
            "flops_per_sample": forward_flops(model, batch),
            "parameters": model.num_parameters(),
            "mtl_auc": summary([metric(r, "mtl_auc") for r in rs]),
        }
        results[m].append(entry)
        rows.append(
            [
                m,
                str(d),
                str(depth),
                f"{entry['flops_per_sample'] / 1e6:.3f}",
                f"{entry['parameters']:,}",
                fmt_mean_std(entry["mtl_auc"]["mean"], entry["mtl_auc"]["std"]),
            ]
        )
    section.table(
        ["model", "d", "depth", "MFLOPs / sample", "parameters", "MTL-AUC"],
        rows,
        caption="Scaling grid",
    )
    path = figures.curves(
        {
            m: (
                [e["flops_per_sample"] for e in es],
                [e["mtl_auc"]["mean"] for e in es],
                [f"d{e['options']['embedding_dim']}x{e['options'][MODELS[m]]}" for e in es],
            )
            for m, es in results.items()
        },
        "Test MTL-AUC against forward FLOPs per sample",
        "forward FLOPs per sample",
        "MTL-AUC",
        figure_path(ctx, "scaling_auc_flops"),
    )
    section.figure(path, "MTL-AUC against FLOPs per sample, INFNet and WuKong")
    for m, es in results.items():
        best = max(
            es, key=lambda e: e["mtl_auc"]["mean"] if np.isfinite(e["mtl_auc"]["mean"]) else -1
        )
        section.text(
            f"{m}: best MTL-AUC {fmt(best['mtl_auc']['mean'], 4)} at {best['options']}, "
            f"{best['flops_per_sample'] / 1e6:.3f} MFLOPs per sample."
        )
    records = [r for rs in groups.values() for r in rs]
    failures(section, records)
    flag_table(section, records)
    return {"models": results, "runs": run_table(records)}
