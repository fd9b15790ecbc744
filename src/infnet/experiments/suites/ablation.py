"""The ablation suite (source document 4.4.1, paper Table 3): INFNet without each part."""

from __future__ import annotations

from typing import Any

from infnet.experiments import figures
from infnet.experiments.report import Report, fmt_mean_std, fmt_pct
from infnet.experiments.suites.context import (
    INFNET,
    Context,
    by_label,
    failures,
    figure_path,
    main_task,
    metric,
    relative,
    run_table,
    summary,
)

# INFNet's ablation switches (models/infnet.py, DESIGN.md section 4, paper Table 3).
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "-task tokens": {"use_task_tokens": False},
    "-proxies (full attention)": {"use_proxies": False},
    "-homogeneous flow (PGU)": {"homogeneous_flow": False},
    "-heterogeneous flow": {"heterogeneous_flow": False},
    "-structured (untyped tokens)": {"structured": False},
}


def run(ctx: Context, report: Report) -> dict[str, Any]:
    main = main_task(ctx.schema)
    specs = [
        ctx.spec(label, INFNET, opts, s)
        for label, opts in ABLATIONS.items()
        for s in ctx.grid_seeds
    ]
    groups = by_label(ctx.runner.run_all(specs, "ablation"))
    section = report.section("Ablation (source document 4.4.1, paper Table 3)")
    section.text(
        f"INFNet with one switch off at a time; main task `{main}`; relative loss = MTL-AUC / "
        "MTL-AUC(full) - 1 per seed. `-proxies` is full self-attention over all tokens."
    )
    results, rows = {}, []
    for label, opts in ABLATIONS.items():
        rs = groups[label]
        entry = {
            "options": opts,
            **{
                k: summary([metric(r, k) for r in rs])
                for k in (f"{main}/auc", f"{main}/gauc", "mtl_auc", "mtl_gauc")
            },
        }
        entry["relative_loss"] = summary(relative(rs, groups["full"]))
        results[label] = entry
        rows.append(
            [label]
            + [
                fmt_mean_std(entry[k]["mean"], entry[k]["std"])
                for k in (f"{main}/auc", f"{main}/gauc", "mtl_auc")
            ]
            + [
                "-"
                if label == "full"
                else fmt_pct(entry["relative_loss"]["mean"], entry["relative_loss"]["std"])
            ]
        )
    section.table(
        ["variant", "AUC", "gAUC", "MTL-AUC", "MTL-AUC vs full"], rows, caption="Component ablation"
    )
    labels = list(ABLATIONS)
    path = figures.bars(
        labels,
        [results[k]["mtl_auc"]["mean"] for k in labels],
        [results[k]["mtl_auc"]["std"] for k in labels],
        "INFNet ablation: MTL-AUC",
        "MTL-AUC",
        figure_path(ctx, "ablation_mtl_auc"),
    )
    section.figure(path, "MTL-AUC of each ablation variant")
    all_records = [r for rs in groups.values() for r in rs]
    failures(section, all_records)
    return {"main_task": main, "variants": results, "runs": run_table(all_records)}
