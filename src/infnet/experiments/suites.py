"""The experiment suites of the source document's chapter 4 (see `SUITES`).

Every suite takes a `Context` (data, output folder, runner, seeds, models, quick) and
fills one report section plus a results dict (every number with its config, seed and run
directory). `run_suite` writes results.json, report.md, index.html and the figures into
the suite's folder; `paper` runs all suites into subfolders plus one combined report.

Definitions used by the tables:
- main task: the first binary task of the schema (e.g. click); the columns AUC, gAUC and
  LogLoss of table 4.2.1 are the main task's, MTL-AUC / MTL-gAUC the task-weighted means
  over all binary tasks (DESIGN.md section 6);
- relative improvement (table 4.2.1): MTL-AUC(model) / MTL-AUC(FM) - 1, computed per seed
  against FM's run of the same seed, then mean ± std over seeds;
- relative loss (ablation): MTL-AUC(variant) / MTL-AUC(full) - 1 in the same way;
- mean ± std: over the seeds whose run succeeded, std with ddof = 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from infnet.data.loader import PreparedDataset
from infnet.data.schema import Schema
from infnet.experiments import figures
from infnet.experiments.report import Report, Section, fmt, fmt_mean_std, fmt_p, fmt_pct
from infnet.experiments.runner import Runner, RunSpec, load_predictions, ok
from infnet.experiments.stats import delong, mean_std, paired_ttest
from infnet.training.metrics import label_correlation, relative_improvement

INFNET, REFERENCE = "infnet", "fm"

# INFNet's ablation switches (models/infnet.py, DESIGN.md section 4, paper Table 3).
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "-task tokens": {"use_task_tokens": False},
    "-proxies (full attention)": {"use_proxies": False},
    "-homogeneous flow (PGU)": {"homogeneous_flow": False},
    "-heterogeneous flow": {"heterogeneous_flow": False},
    "-structured (untyped tokens)": {"structured": False},
}
# Proxy sweeps (source document 4.4.2, paper Fig. 4): option -> values.
SWEEPS: dict[str, tuple[str, list[int]]] = {
    "categorical proxies m": ("num_categorical_proxies", [1, 2, 4, 8, 16]),
    "sequence proxies per behaviour k": ("sequence_proxies_per_behaviour", [1, 2, 4]),
    "shared task tokens N_s": ("num_shared_task_tokens", [1, 2, 3]),
}
# --quick: 1 epoch on the most recent rows of each split (runner.RowLimit), batch 256
# (about 117 steps: enough for the AUCs to separate from 0.5 on the simulator),
# one seed by default; the grids (ablation, proxies) run only the first seed, the proxy
# sweeps their ends and the default.
QUICK_TRAIN = {"epochs": 1, "batch_size": 256}
QUICK_ROWS = {"train": 30_000, "valid": 5_000, "test": 10_000}
QUICK_SWEEPS = {
    "num_categorical_proxies": [1, 4, 16],
    "sequence_proxies_per_behaviour": [1, 2],
    "num_shared_task_tokens": [1, 2],
}


@dataclass
class Context:
    data: PreparedDataset
    out: Path
    runner: Runner
    seeds: list[int]
    models: list[str] | None = None  # None: every registered model
    quick: bool = False
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides of every run
    infnet_run: Path | None = None  # the attention suite's trained run (else one is trained)
    console: Console = field(default_factory=lambda: Console(stderr=True))
    latency_batch: int = 1024
    reps: int = 5

    @property
    def schema(self) -> Schema:
        return self.data.schema

    @property
    def grid_seeds(self) -> list[int]:
        """Seeds of the ablation and proxy grids: all, or the first one under --quick."""
        return self.seeds[:1] if self.quick else self.seeds

    def spec(self, label: str, model: str, options: dict[str, Any], seed: int) -> RunSpec:
        return RunSpec(label=label, model=model, options=options, train=self.train, seed=seed)


# --- aggregation over seeds -------------------------------------------------------------------
def main_task(schema: Schema) -> str:
    binary = [t.name for t in schema.tasks if t.kind == "binary"]
    return binary[0] if binary else schema.tasks[0].name


def metric(record: dict[str, Any], key: str) -> float:
    """A test figure of a record: "mtl_auc" or "task/metric"; NaN when the run failed."""
    if not ok(record):
        return float("nan")
    node: Any = record["test"]
    for part in key.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return float("nan") if node is None else float(node)


def summary(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if math.isfinite(v)]
    mean, std = mean_std(finite) if finite else (float("nan"), float("nan"))
    return {"mean": mean, "std": std, "values": values, "n": len(finite)}


def by_label(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["label"], []).append(r)
    return groups


def relative(
    records: list[dict[str, Any]], base: list[dict[str, Any]], key: str = "mtl_auc"
) -> list[float]:
    """Per seed: key(record) / key(base record of the same seed) - 1 (NaN where one is missing)."""
    base_by_seed = {r["seed"]: metric(r, key) for r in base}
    out = []
    for r in records:
        a, b = metric(r, key), base_by_seed.get(r["seed"], float("nan"))
        out.append(
            relative_improvement(a, b) if math.isfinite(a) and math.isfinite(b) else float("nan")
        )
    return out


def run_table(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What results.json keeps of every run: label, model, options, seed, status, run dir, metrics."""
    keep = (
        "label",
        "model",
        "options",
        "seed",
        "status",
        "run_dir",
        "error",
        "parameters",
        "seconds",
        "config",
        "test",
        "predictions",
    )
    return [{k: r[k] for k in keep if k in r} for r in records]


def failures(section: Section, records: list[dict[str, Any]]) -> None:
    failed = [r for r in records if not ok(r)]
    if failed:
        section.table(
            ["run", "model", "seed", "error"],
            [[r["label"], r["model"], str(r["seed"]), r.get("error", "")] for r in failed],
            caption="Failed runs (recorded; the suite went on without them)",
        )


def figure_path(ctx: Context, name: str) -> Path:
    return ctx.out / f"{name}.png"


# --- compare (tables 4.2.1, 4.2.2, significance) ---------------------------------------------------
def compare(ctx: Context, report: Report) -> dict[str, Any]:
    from infnet.models.base import available_models, model_class

    models = ctx.models or available_models()
    for m in models:
        model_class(m)  # an unknown model stops here with the list of known ones
    schema, main = ctx.schema, main_task(ctx.schema)
    records = ctx.runner.run_all(
        [ctx.spec(m, m, {}, s) for m in models for s in ctx.seeds], "compare"
    )
    groups = by_label(records)
    section = report.section("Comparison (source document 4.2.1, 4.2.2)")
    section.text(
        f"Test split, {len(ctx.seeds)} seed(s) {ctx.seeds}, mean ± std over seeds. AUC, gAUC and "
        f"LogLoss are the main task's (`{main}`, the first binary task); MTL-AUC is the "
        "task-weighted mean AUC of the binary tasks; relative improvement is MTL-AUC / "
        "MTL-AUC(FM) - 1 per seed against FM's run of the same seed."
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
        entry["parameters"] = next((r["parameters"] for r in rs if ok(r)), None)
        overall[m] = entry
        rel = entry["relative_improvement"]
        rows.append(
            [m]
            + [
                fmt_mean_std(entry[k]["mean"], entry[k]["std"])
                for k in (f"{main}/auc", f"{main}/gauc", f"{main}/logloss", "mtl_auc", "mtl_gauc")
            ]
            + ["-" if rel is None or m == REFERENCE else fmt_pct(rel["mean"], rel["std"])]
        )
    section.table(
        ["model", "AUC", "gAUC", "LogLoss", "MTL-AUC", "MTL-gAUC", "rel. impr. vs FM"],
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
            [m]
            + [
                fmt_mean_std(per_task[m][f"{n}/{k}"]["mean"], per_task[m][f"{n}/{k}"]["std"])
                for n, ms in cols
                for k in ms
            ]
        )
    section.table(
        header, rows, caption="Table 4.2.2: per task (binary: AUC, gAUC; regression: R2, MAE)"
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
    return {
        "main_task": main,
        "overall": overall,
        "per_task": per_task,
        "significance": significance,
        "runs": run_table(records),
    }


def _significance(
    ctx: Context, groups: dict[str, list[dict[str, Any]]], per_task: dict[str, Any]
) -> list[dict[str, Any]]:
    out = []
    for j, task in enumerate(ctx.schema.tasks):
        key = f"{task.name}/{'auc' if task.kind == 'binary' else 'r2'}"
        baselines = {
            m: v[key]["mean"]
            for m, v in per_task.items()
            if m != INFNET and math.isfinite(v[key]["mean"])
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
        "MTL-AUC on test (mean ± std over seeds)",
        "MTL-AUC",
        figure_path(ctx, "compare_mtl_auc"),
    )
    section.figure(path, "MTL-AUC of every model (table 4.2.1)")


# --- correlation ------------------------------------------------------------------------------
def correlation(ctx: Context, report: Report) -> dict[str, Any]:
    model = INFNET if not ctx.models or INFNET in ctx.models else ctx.models[0]
    [record] = ctx.runner.run_all([ctx.spec(model, model, {}, ctx.seeds[0])], "correlation")
    section = report.section("Task correlation (source document 4.2.2)")
    tasks = ctx.schema.task_names
    if not ok(record):
        failures(section, [record])
        return {"model": model, "runs": run_table([record])}
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


# --- ablation (source document 4.4.1) ------------------------------------------------------------
def ablation(ctx: Context, report: Report) -> dict[str, Any]:
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


# --- proxies (source document 4.4.2, paper Fig. 4) --------------------------------------------------
def proxies(ctx: Context, report: Report) -> dict[str, Any]:
    import torch

    from infnet.experiments.measure import latency_ms, peak_memory
    from infnet.models.base import build_model

    seq = ctx.schema.sequences
    sweeps = {
        name: (
            opt,
            [
                v
                for v in (QUICK_SWEEPS.get(opt, values) if ctx.quick else values)
                if opt != "sequence_proxies_per_behaviour" or seq is None or v <= seq.max_len
            ],
        )
        for name, (opt, values) in SWEEPS.items()
    }
    specs = [
        ctx.spec(f"{opt}={v}", INFNET, {opt: v}, s)
        for _, (opt, values) in sweeps.items()
        for v in values
        for s in ctx.grid_seeds
    ]
    groups = by_label(ctx.runner.run_all(specs, "proxies"))
    batch = ctx.data.batch_at("test", np.arange(min(ctx.latency_batch, ctx.data.num_rows("test"))))
    main = main_task(ctx.schema)
    section = report.section("Proxy counts (source document 4.4.2, paper Fig. 4)")
    section.text(
        f"One count varied at a time, the others at their defaults. Latency: median ms of one "
        f"inference batch of {len(batch.user)} test rows over {ctx.reps} repetitions, in process, "
        "on this machine's CPU. Peak memory: the most tensor memory live during that forward "
        "(a TorchDispatchMode counts every allocation; parameters and input excluded)."
    )
    results: dict[str, Any] = {}
    panels = []
    for name, (opt, values) in sweeps.items():
        rows, entries = [], []
        for v in values:
            rs = groups[f"{opt}={v}"]
            torch.manual_seed(0)
            model = build_model(INFNET, ctx.schema, {opt: v}).eval()
            ms = latency_ms(lambda m=model: m(batch), ctx.reps)
            mb = peak_memory(lambda m=model: m(batch)).total_peak / 2**20
            entry = {
                "option": opt,
                "value": v,
                "auc": summary([metric(r, f"{main}/auc") for r in rs]),
                "mtl_auc": summary([metric(r, "mtl_auc") for r in rs]),
                "latency_ms": ms,
                "peak_mb": mb,
                "parameters": model.num_parameters(),
                "run_dirs": [r.get("run_dir") for r in rs],
            }
            entries.append(entry)
            rows.append(
                [
                    str(v),
                    fmt_mean_std(entry["auc"]["mean"], entry["auc"]["std"]),
                    fmt_mean_std(entry["mtl_auc"]["mean"], entry["mtl_auc"]["std"]),
                    fmt(ms, 1),
                    fmt(mb, 1),
                    f"{entry['parameters']:,}",
                ]
            )
        results[name] = entries
        section.table(
            [name, f"AUC ({main})", "MTL-AUC", "latency ms/batch", "peak MB", "parameters"],
            rows,
            caption=f"Sweep of {name} (`{opt}`)",
        )
        panels.append(
            (
                name,
                values,
                [e["mtl_auc"]["mean"] for e in entries],
                [e["mtl_auc"]["std"] for e in entries],
                [e["latency_ms"] for e in entries],
                [e["peak_mb"] for e in entries],
            )
        )
    path = figures.sweep_panels(panels, figure_path(ctx, "proxies"))
    section.figure(path, "MTL-AUC (top), latency and peak memory (bottom) against each proxy count")
    all_records = [r for rs in groups.values() for r in rs]
    failures(section, all_records)
    return {
        "main_task": main,
        "latency_batch": len(batch.user),
        "reps": ctx.reps,
        "sweeps": results,
        "runs": run_table(all_records),
    }


# --- the registry ----------------------------------------------------------------------------------
def _efficiency(ctx: Context, report: Report) -> dict[str, Any]:
    from infnet.experiments.efficiency import efficiency

    return efficiency(ctx, report)


def _attention(ctx: Context, report: Report) -> dict[str, Any]:
    from infnet.experiments.attention import attention

    return attention(ctx, report)


SUITES: dict[str, Callable[[Context, Report], dict[str, Any]]] = {
    "compare": compare,
    "correlation": correlation,
    "ablation": ablation,
    "proxies": proxies,
    "efficiency": _efficiency,
    "attention": _attention,
}
ALL = [*SUITES, "paper"]


def run_suite(name: str, ctx: Context) -> dict[str, Any]:
    """Run one suite (or `paper`: all of them) and write its report into ctx.out."""
    if name not in ALL:
        raise ValueError(f"unknown suite {name!r}; suites: {', '.join(ALL)}")
    if name != "paper":
        report = Report(f"infnet experiment {name}: {ctx.data.path}")
        results = {
            "suite": name,
            "data": str(ctx.data.path),
            "seeds": ctx.seeds,
            "quick": ctx.quick,
            "train": ctx.train,
            name: SUITES[name](ctx, report),
        }
        report.write(ctx.out, results)
        return results
    combined = Report(f"infnet experiment paper: {ctx.data.path}")
    results = {
        "suite": "paper",
        "data": str(ctx.data.path),
        "seeds": ctx.seeds,
        "quick": ctx.quick,
        "train": ctx.train,
    }
    for sub in SUITES:
        sub_ctx = Context(**{**ctx.__dict__, "out": ctx.out / sub})
        sub_report = Report(f"infnet experiment {sub}: {ctx.data.path}")
        try:
            results[sub] = SUITES[sub](sub_ctx, sub_report)
        except Exception as err:  # one suite's failure must not lose the others
            section = sub_report.section(f"{sub}: failed")
            section.text(f"The suite stopped: `{type(err).__name__}: {err}`")
            results[sub] = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        sub_report.write(sub_ctx.out, {"suite": sub, sub: results[sub]})
        combined.sections += sub_report.sections
    combined.write(ctx.out, results)
    return results
