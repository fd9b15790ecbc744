"""The compare suite (tables 4.2.1 and 4.2.2 of the source document): every model over
N seeds, and INFNet against the best baseline per task (paired t-test over seeds, DeLong
on the test set)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from infnet.data.schema import Schema
from infnet.experiments import figures
from infnet.experiments.report import Report, Section, fmt, fmt_mean_std, fmt_p, fmt_pct
from infnet.experiments.runner import load_predictions, ok
from infnet.experiments.stats import delong, paired_ttest
from infnet.experiments.suites import tuning
from infnet.experiments.suites.context import (
    FLOORS,
    INFNET,
    REFERENCE,
    Context,
    by_label,
    failures,
    figure_path,
    flag_table,
    main_task,
    marked,
    metric,
    relative,
    run_table,
    spread,
    summary,
)
from infnet.models import available_models, model_class


def run(ctx: Context, report: Report) -> dict[str, Any]:
    if ctx.tuned is not None:  # every tuned label's best configuration
        specs = tuning.tuned_specs(ctx, ctx.tuned)
        models = list(dict.fromkeys(spec.label for spec in specs))
    else:
        models = ctx.models or available_models()
        for m in models:
            model_class(m)  # an unknown model stops here with the list of known ones
        specs = [ctx.spec(m, m, {}, s) for m in models for s in ctx.seeds]
    schema, main = ctx.schema, main_task(ctx.schema)
    records = ctx.runner.run_all(specs, "compare")
    if ctx.tuned is not None:
        tuning.section(ctx, report, ctx.tuned)
    groups = by_label(records)
    section = report.section("Comparison (source document 4.2.1, 4.2.2)")
    floor = next((f for f in reversed(FLOORS) if f in groups), None)
    section.text(
        f"Test split, {len(ctx.seeds)} seed(s) {ctx.seeds}, mean ± std over seeds. AUC, gAUC and "
        f"LogLoss are the main task's (`{main}`, the first binary task); MTL-AUC is the "
        "task-weighted mean AUC of the binary tasks; relative improvement is MTL-AUC / "
        "MTL-AUC(FM) - 1 per seed against FM's run of the same seed"
        + (
            f"; lift is MTL-AUC - MTL-AUC({floor}) per seed, over the reference `{floor}` "
            "(shrunk item and user label means of the train split, models/mean.py): the floor "
            "a model must beat to have learned anything."
            if floor
            else "."
        )
    )
    overall: dict[str, Any] = {}
    rows = []
    for m in models:
        rs = groups[m]
        entry = {
            k: summary([metric(r, k) for r in rs])
            for k in (f"{main}/auc", f"{main}/gauc", f"{main}/logloss", "mtl_auc", "mtl_gauc")
        }
        entry["relative_improvement"] = (
            summary(relative(rs, groups[REFERENCE])) if REFERENCE in groups else None
        )
        entry["lift"] = summary(_lift(rs, groups[floor])) if floor else None
        entry["parameters"] = next((r["parameters"] for r in rs if ok(r)), None)
        overall[m] = entry
        rel, lift = entry["relative_improvement"], entry["lift"]
        rows.append(
            [marked(m, rs)]
            + [
                fmt_mean_std(entry[k]["mean"], entry[k]["std"])
                for k in (f"{main}/auc", f"{main}/gauc", f"{main}/logloss", "mtl_auc", "mtl_gauc")
            ]
            + ["-" if rel is None or m == REFERENCE else fmt_pct(rel["mean"], rel["std"])]
            + ([] if floor is None else ["-" if m == floor else _fmt_lift(lift)])
        )
    section.table(
        ["model", "AUC", "gAUC", "LogLoss", "MTL-AUC", "MTL-gAUC", "rel. impr. vs FM"]
        + ([] if floor is None else [f"lift vs {floor}"]),
        rows,
        caption="Table 4.2.1: overall",
    )
    if REFERENCE not in groups:
        section.text("FM was not among the models, so the relative improvement is not defined.")

    per_task: dict[str, Any] = {}
    header, rows = ["model"], []
    cols = [
        (t.name, ("auc", "gauc") if t.kind == "binary" else ("r2", "mae")) for t in schema.tasks
    ]
    for name, ms in cols:
        header += [f"{name} {k.upper() if k != 'gauc' else 'gAUC'}" for k in ms]
    for m in models:
        per_task[m] = {
            f"{n}/{k}": summary([metric(r, f"{n}/{k}") for r in groups[m]])
            for n, ms in cols
            for k in ms
        }
        rows.append(
            [marked(m, groups[m])]
            + [
                fmt_mean_std(per_task[m][f"{n}/{k}"]["mean"], per_task[m][f"{n}/{k}"]["std"])
                for n, ms in cols
                for k in ms
            ]
        )
    section.table(
        header, rows, caption="Table 4.2.2: per task (binary: AUC, gAUC; regression: R2, MAE)"
    )
    below = _below_floor(schema, per_task, floor) if floor else []
    if below:
        section.text(
            f"Not above the reference `{floor}` (mean over seeds; AUC of a binary task, R2 of a "
            "regression task): " + "; ".join(below) + "."
        )

    significance = _significance(ctx, groups, per_task) if INFNET in groups else []
    if significance:
        section.table(
            [
                "task",
                "metric",
                "INFNet",
                "best baseline",
                "baseline",
                "diff",
                "paired t (seeds)",
                "p (t-test)",
                "test-set test",
                "z",
                "p (test set)",
            ],
            [
                [
                    s["task"],
                    s["metric"],
                    fmt(s["infnet"]),
                    s["baseline"],
                    fmt(s["baseline_value"]),
                    fmt(s["difference"]),
                    fmt(s["t"], 2),
                    fmt_p(s["p_ttest"]),
                    s["test_set_test"],
                    fmt(s["z"], 2),
                    fmt_p(s["p_test_set"]),
                ]
                for s in significance
            ],
            caption="Significance of INFNet against the best baseline per task",
        )
        section.text(
            "Paired t-test: the per-seed test figures of INFNet and the baseline over the seeds "
            "both completed (needs 2 or more). Test-set test, on the predictions of the runs of "
            f"seed {ctx.seeds[0]}: DeLong's test for two correlated AUCs (binary tasks), a paired "
            "t-test of the per-row absolute errors (regression; z is its t statistic, positive "
            "when INFNet's errors are smaller)."
        )
    elif INFNET not in groups:
        section.text("INFNet was not among the models: no significance test.")
    _compare_figure(ctx, section, models, overall)
    failures(section, records)
    flag_table(section, records)
    return {
        "main_task": main,
        "overall": overall,
        "per_task": per_task,
        "significance": significance,
        "runs": run_table(records),
    }


def _lift(records: list[dict[str, Any]], floor: list[dict[str, Any]]) -> list[float]:
    """Per seed: MTL-AUC(record) - MTL-AUC(the floor's run of the same seed)."""
    base = {r["seed"]: metric(r, "mtl_auc") for r in floor}
    return [metric(r, "mtl_auc") - base.get(r["seed"], float("nan")) for r in records]


def _fmt_lift(lift: dict[str, Any]) -> str:
    if not math.isfinite(lift["mean"]):
        return "-"
    std = f" ± {lift['std']:.4f}" if math.isfinite(lift["std"]) else ""
    return f"{lift['mean']:+.4f}{std}"


def _below_floor(schema: Schema, per_task: dict[str, Any], floor: str) -> list[str]:
    out = []
    for t in schema.tasks:
        key = f"{t.name}/{'auc' if t.kind == 'binary' else 'r2'}"
        ref = per_task[floor][key]["mean"]
        out += [
            f"{m} on {t.name} ({v[key]['mean']:.4f} vs {ref:.4f})"
            for m, v in per_task.items()
            if m not in FLOORS and math.isfinite(ref) and not v[key]["mean"] > ref
        ]
    return out


def _significance(
    ctx: Context, groups: dict[str, list[dict[str, Any]]], per_task: dict[str, Any]
) -> list[dict[str, Any]]:
    out = []
    for j, task in enumerate(ctx.schema.tasks):
        key = f"{task.name}/{'auc' if task.kind == 'binary' else 'r2'}"
        baselines = {
            m: v[key]["mean"]
            for m, v in per_task.items()
            # by model, not label: a tuned INFNet variant (infnet_v2) is INFNet, not a baseline
            if groups[m][0]["model"] != INFNET and math.isfinite(v[key]["mean"])
        }
        if not baselines:
            continue
        best = max(baselines, key=baselines.get)
        ours = {r["seed"]: metric(r, key) for r in groups[INFNET]}
        theirs = {r["seed"]: metric(r, key) for r in groups[best]}
        seeds = [
            s
            for s in ctx.seeds
            if math.isfinite(ours.get(s, math.nan)) and math.isfinite(theirs.get(s, math.nan))
        ]
        t, p = paired_ttest([ours[s] for s in seeds], [theirs[s] for s in seeds])
        entry = {
            "task": task.name,
            "metric": key.split("/")[1],
            "baseline": best,
            "seeds": seeds,
            "infnet": per_task[INFNET][key]["mean"],
            "baseline_value": baselines[best],
            "difference": per_task[INFNET][key]["mean"] - baselines[best],
            "t": t,
            "p_ttest": p,
            "test_set_test": "-",
            "z": float("nan"),
            "p_test_set": float("nan"),
            "test_set_seed": None,
        }
        seed0 = ctx.seeds[0]
        a = next((r for r in groups[INFNET] if r["seed"] == seed0 and ok(r)), None)
        b = next((r for r in groups[best] if r["seed"] == seed0 and ok(r)), None)
        if a is not None and b is not None:
            pa, pb = load_predictions(a), load_predictions(b)
            rows = pa.label_mask[:, j]
            y = pa.labels[rows, j]
            if task.kind == "binary":
                d = delong(y, pa.outputs[rows, j], pb.outputs[rows, j])
                entry.update(test_set_test="DeLong", z=d["z"], p_test_set=d["p"])
            else:
                tt, pp = paired_ttest(
                    np.abs(y - pb.outputs[rows, j]), np.abs(y - pa.outputs[rows, j])
                )
                entry.update(test_set_test="paired t, |error|", z=tt, p_test_set=pp)
            entry["test_set_seed"] = seed0
        out.append(entry)
    return out


def _compare_figure(
    ctx: Context, section: Section, models: list[str], overall: dict[str, Any]
) -> None:
    means = [overall[m]["mtl_auc"]["mean"] for m in models]
    stds = [overall[m]["mtl_auc"]["std"] for m in models]
    path = figures.bars(
        models,
        means,
        stds,
        f"MTL-AUC on test ({spread(len(ctx.seeds))})",
        "MTL-AUC",
        figure_path(ctx, "compare_mtl_auc"),
        base=0.5,
    )
    section.figure(
        path,
        f"MTL-AUC of every model, highest first (table 4.2.1); {spread(len(ctx.seeds))}; "
        "the axis starts at 0.5 (chance)",
    )
