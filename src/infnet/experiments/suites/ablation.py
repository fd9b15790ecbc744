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
    flag_table,
    main_task,
    metric,
    relative,
    run_table,
    spread,
    summary,
)

# INFNet's ablation switches, one table per design (models/infnet_v1.py, infnet_v2.py):
# table -> variant label -> options; the first variant of a table is its reference.
ABLATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "v1 (source document 4.4.1, paper v1 Table 3)": {
        "v1 full": {"preset": "v1"},
        "v1 -task tokens": {"preset": "v1", "use_task_tokens": False},
        "v1 -proxies (full attention)": {"preset": "v1", "use_hubs": False},
        "v1 -homogeneous flow (PGU)": {"preset": "v1", "broadcast": "none"},
        "v1 -heterogeneous flow": {"preset": "v1", "aggregation": False},
        "v1 -structured (untyped tokens)": {"preset": "v1", "structured": False},
    },
    "v2 (revised paper)": {
        "v2 full": {"preset": "v2"},
        "v2 -aggregation": {"preset": "v2", "aggregation": False},
        "v2 -broadcast": {"preset": "v2", "broadcast": "none"},
        "v2 -hubs (full attention)": {"preset": "v2", "use_hubs": False},
        "v2 -task": {"preset": "v2", "use_task_tokens": False},
    },
    "v2 micro-ablations": {
        "hub_init=mean": {"preset": "v2", "hub_init": "mean"},
        "hub_init=random": {"preset": "v2", "hub_init": "random"},
        "fusion=sum": {"preset": "v2", "fusion": "sum"},
        "task_hubs=shared": {"preset": "v2", "task_hubs": "shared"},
        "task_hubs=specific": {"preset": "v2", "task_hubs": "specific"},
        "broadcast=pgu": {"preset": "v2", "broadcast": "pgu"},
        "bgu_form=scale": {"preset": "v2", "bgu_form": "scale"},
        "bgu_form=shift": {"preset": "v2", "bgu_form": "shift"},
        "hub_views=others": {"preset": "v2", "hub_views": "others"},
    },
}
# A table measured against another table's reference row (else its own first row).
REFERENCES = {"v2 micro-ablations": "v2 full"}
METRICS = ("auc", "gauc")


def run(ctx: Context, report: Report) -> dict[str, Any]:
    main = main_task(ctx.schema)
    binary = [t.name for t in ctx.schema.tasks if t.kind == "binary"]
    tables = {
        t: table
        for t, table in ABLATIONS.items()
        if REFERENCES.get(t) is None or any(REFERENCES[t] in other for other in ABLATIONS.values())
    }
    specs = [
        ctx.spec(label, INFNET, opts, s)
        for table in tables.values()
        for label, opts in table.items()
        for s in ctx.grid_seeds
    ]
    groups = by_label(ctx.runner.run_all(specs, "ablation"))
    section = report.section("Ablation (source document 4.4.1; both designs of the paper)")
    section.text(
        f"INFNet with one part off (or one choice changed) at a time, {len(ctx.grid_seeds)} "
        f"seed(s) {ctx.grid_seeds}; test AUC and gAUC per binary task, MTL-AUC; relative "
        "loss = MTL-AUC / MTL-AUC(reference) - 1 per seed, the reference being each table's "
        "first row (the micro-ablations': `v2 full`). `-proxies` / `-hubs` is full "
        "self-attention over all tokens."
    )
    results: dict[str, Any] = {}
    for title, table in tables.items():
        reference = REFERENCES.get(title, next(iter(table)))
        rows, entries = [], {}
        for label, opts in table.items():
            rs = groups[label]
            keys = [f"{t}/{m}" for t in binary for m in METRICS] + ["mtl_auc", "mtl_gauc"]
            entry = {"options": opts, **{k: summary([metric(r, k) for r in rs]) for k in keys}}
            entry["relative_loss"] = summary(relative(rs, groups[reference]))
            entries[label] = entry
            rows.append(
                [label]
                + [fmt_mean_std(entry[k]["mean"], entry[k]["std"]) for k in keys[:-1]]
                + [
                    "-"
                    if label == reference
                    else fmt_pct(entry["relative_loss"]["mean"], entry["relative_loss"]["std"])
                ]
            )
        header = ["variant"]
        header += [f"{t} {'AUC' if m == 'auc' else 'gAUC'}" for t in binary for m in METRICS]
        header += ["MTL-AUC", "MTL-AUC vs reference"]
        section.table(header, rows, caption=f"Ablation: {title}")
        results[title] = entries
        labels = list(table)
        path = figures.bars(
            labels,
            [entries[k]["mtl_auc"]["mean"] for k in labels],
            [entries[k]["mtl_auc"]["std"] for k in labels],
            f"INFNet ablation, {title}: MTL-AUC",
            "MTL-AUC",
            figure_path(
                ctx, "ablation_" + title.split(" ")[0] + ("_micro" if "micro" in title else "")
            ),
            base=0.5,
        )
        section.figure(
            path,
            f"MTL-AUC of each variant, {title}, highest first; {spread(len(ctx.grid_seeds))}; "
            "the axis starts at 0.5 (chance)",
        )
    all_records = [r for rs in groups.values() for r in rs]
    failures(section, all_records)
    flag_table(section, all_records)
    return {"main_task": main, "tables": results, "runs": run_table(all_records)}
