"""The variants suite: INFNet's two designs, v2's time-aware tokens and project extensions,
against DIN and HSTU (the sequence models INFNet must beat), one protocol for all.

Per binary task: test AUC and gAUC, mean ± std over seeds, and each variant against DIN:
the paired t-test over seeds of the task's AUC and DeLong's test on the first seed's
test set. On simulated data (the prepared stats hold the oracle AUC of the true label
probabilities) also the share of the learnable signal each model reaches,
(AUC - 0.5) / (oracle AUC - 0.5).
"""

from __future__ import annotations

import math
from typing import Any

from infnet.experiments import figures
from infnet.experiments.report import Report, fmt, fmt_mean_std, fmt_p
from infnet.experiments.runner import load_predictions, ok
from infnet.experiments.stats import delong, paired_ttest
from infnet.experiments.suites.context import (
    Context,
    by_label,
    failures,
    figure_path,
    flag_table,
    metric,
    run_table,
    spread,
    summary,
)

REFERENCE = "DIN"
# label -> (model, options)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "INFNet v1": ("infnet", {"preset": "v1"}),
    "INFNet v2": ("infnet", {"preset": "v2"}),
    "v2 + time-aware tokens": ("infnet", {"preset": "v2", "time_aware": True}),
    "v2 + candidate hub": ("infnet", {"preset": "v2", "candidate_hub": True}),
    "v2 + wide heads": ("infnet", {"preset": "v2", "wide_heads": True}),
    "v2 + candidate + wide": (
        "infnet",
        {"preset": "v2", "candidate_hub": True, "wide_heads": True},
    ),
    "v2 + time + candidate + wide": (
        "infnet",
        {"preset": "v2", "time_aware": True, "candidate_hub": True, "wide_heads": True},
    ),
    "DIN": ("din", {}),
    "DIN + time-aware tokens": ("din", {"time_aware": True}),
    "HSTU": ("hstu", {}),
}


def run(ctx: Context, report: Report) -> dict[str, Any]:
    schema = ctx.schema
    binary = [(j, t.name) for j, t in enumerate(schema.tasks) if t.kind == "binary"]
    # --models keeps the variants of those models; on data without sequences the sequence
    # options fail, recorded
    variants = {k: v for k, v in VARIANTS.items() if not ctx.models or v[0] in ctx.models}
    specs = [
        ctx.spec(label, m, opts, s) for label, (m, opts) in variants.items() for s in ctx.seeds
    ]
    groups = by_label(ctx.runner.run_all(specs, "variants"))
    oracle = ctx.data.stats.get("oracle_auc", {}).get("test", {})
    section = report.section("INFNet variants against DIN and HSTU")
    section.text(
        f"Test split, {len(ctx.seeds)} seed(s) {ctx.seeds}, every run the same training "
        f"({ctx.train or 'defaults'}); mean ± std over seeds. p (t): paired t-test over seeds of "
        f"the task's AUC against {REFERENCE}; p (DeLong): DeLong's test of the two models' test "
        f"AUCs on seed {ctx.seeds[0]}'s test set."
    )
    results: dict[str, Any] = {}
    for label, (model, opts) in variants.items():
        rs = groups[label]
        entry: dict[str, Any] = {"model": model, "options": opts}
        for key in [f"{t}/{m}" for _, t in binary for m in ("auc", "gauc")] + ["mtl_auc"]:
            entry[key] = summary([metric(r, key) for r in rs])
        entry["seconds"] = summary([float(r.get("seconds", math.nan)) for r in rs if ok(r)])
        entry["parameters"] = next((r["parameters"] for r in rs if ok(r)), None)
        if oracle:
            entry["signal_share"] = {
                t: (entry[f"{t}/auc"]["mean"] - 0.5) / (oracle[t] - 0.5)
                for _, t in binary
                if t in oracle
            }
        if REFERENCE in groups and label != REFERENCE:
            entry["against_din"] = _against(ctx, rs, groups[REFERENCE], binary)
        results[label] = entry

    header = ["variant"] + [f"{t} {m}" for _, t in binary for m in ("AUC", "gAUC")]
    header += ["MTL-AUC", "s / run"]
    section.table(
        header,
        [
            [label]
            + [
                fmt_mean_std(e[k]["mean"], e[k]["std"])
                for k in [f"{t}/{m}" for _, t in binary for m in ("auc", "gauc")] + ["mtl_auc"]
            ]
            + [fmt(e["seconds"]["mean"], 0)]
            for label, e in results.items()
        ],
        caption="AUC and gAUC per task",
    )
    against = {k: e["against_din"] for k, e in results.items() if "against_din" in e}
    if against:
        section.table(
            ["variant"] + [f"{t} {c}" for _, t in binary for c in ("diff", "p (t)", "p (DeLong)")],
            [
                [label]
                + [
                    x
                    for _, t in binary
                    for x in (
                        f"{a[t]['difference']:+.4f}",
                        fmt_p(a[t]["p_ttest"]),
                        fmt_p(a[t]["p_delong"]),
                    )
                ]
                for label, a in against.items()
            ],
            caption=f"Test AUC against {REFERENCE} (difference of the means over seeds)",
        )
    if oracle:
        section.table(
            ["variant"] + [t for _, t in binary if t in oracle],
            [
                [label] + [fmt(e["signal_share"][t], 3) for _, t in binary if t in oracle]
                for label, e in results.items()
            ],
            caption="(AUC - 0.5) / (oracle AUC - 0.5): the share of the learnable signal reached, "
            f"oracle AUC {', '.join(f'{t} {v:.4f}' for t, v in oracle.items())}",
        )
    labels = list(results)
    path = figures.bars(
        labels,
        [results[k]["mtl_auc"]["mean"] for k in labels],
        [results[k]["mtl_auc"]["std"] for k in labels],
        "INFNet variants: MTL-AUC",
        "MTL-AUC",
        figure_path(ctx, "variants_mtl_auc"),
        base=0.5,
    )
    section.figure(
        path,
        f"MTL-AUC of every variant, highest first; {spread(len(ctx.seeds))}; the axis starts "
        "at 0.5 (chance)",
    )
    records = [r for rs in groups.values() for r in rs]
    failures(section, records)
    flag_table(section, records)
    return {"reference": REFERENCE, "variants": results, "runs": run_table(records)}


def _against(
    ctx: Context, ours: list[dict], theirs: list[dict], binary: list[tuple[int, str]]
) -> dict[str, dict[str, Any]]:
    out = {}
    seed0 = ctx.seeds[0]
    a = next((r for r in ours if r["seed"] == seed0 and ok(r)), None)
    b = next((r for r in theirs if r["seed"] == seed0 and ok(r)), None)
    pa, pb = (load_predictions(a), load_predictions(b)) if a and b else (None, None)
    for j, t in binary:
        x = {r["seed"]: metric(r, f"{t}/auc") for r in ours}
        y = {r["seed"]: metric(r, f"{t}/auc") for r in theirs}
        seeds = [
            s
            for s in ctx.seeds
            if math.isfinite(x.get(s, math.nan)) and math.isfinite(y.get(s, math.nan))
        ]
        tt, p = paired_ttest([x[s] for s in seeds], [y[s] for s in seeds])
        entry = {
            "seeds": seeds,
            "difference": summary([x[s] for s in seeds])["mean"]
            - summary([y[s] for s in seeds])["mean"],
            "t": tt,
            "p_ttest": p,
            "p_delong": math.nan,
            "z_delong": math.nan,
        }
        if pa is not None:
            rows = pa.label_mask[:, j]
            d = delong(pa.labels[rows, j], pa.outputs[rows, j], pb.outputs[rows, j])
            entry.update(p_delong=d["p"], z_delong=d["z"])
        out[t] = entry
    return out
