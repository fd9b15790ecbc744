"""The experiment suites of the source document's chapter 4, one module each.

Every suite is a function `run(ctx, report)` of a `Context` (data, output folder, runner,
seeds, models, quick; context.py) that fills one report section and returns a results
dict (every number with its config, seed and run directory). `run_suite` writes
results.json, report.md, index.html and the figures into the suite's folder; `paper`
runs all suites into subfolders plus one combined report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infnet.experiments.report import Report
from infnet.experiments.suites import (
    ablation,
    attention,
    compare,
    correlation,
    efficiency,
    proxies,
    scaling,
    tuning,
    variants,
)
from infnet.experiments.suites.context import QUICK_ROWS, QUICK_TRAIN, Context
from infnet.training.config import TrainConfig

SUITES: dict[str, Callable[[Context, Report], dict[str, Any]]] = {
    "compare": compare.run,
    "variants": variants.run,
    "correlation": correlation.run,
    "ablation": ablation.run,
    "proxies": proxies.run,
    "efficiency": efficiency.run,
    "scaling": scaling.run,
    "attention": attention.run,
}
# tune is not part of `paper`: a study spans hours, and compare --tuned reads its outcome
ALL = [*SUITES, "paper", "tune"]
RUNS = {**SUITES, "tune": tuning.run}


def run_suite(name: str, ctx: Context) -> dict[str, Any]:
    """Run one suite (or `paper`: all of them) and write its report into ctx.out."""
    if name not in ALL:
        raise ValueError(f"unknown suite {name!r}; suites: {', '.join(ALL)}")
    if name != "paper":
        report = Report(f"infnet experiment {name}: {ctx.data.path}")
        evidence(ctx, report, name)
        results = {
            "suite": name,
            "data": str(ctx.data.path),
            "seeds": ctx.seeds,
            "quick": ctx.quick,
            "train": ctx.train,
            name: RUNS[name](ctx, report),
        }
        report.write(ctx.out, results)
        return results
    combined = Report(f"infnet experiment paper: {ctx.data.path}")
    evidence(ctx, combined)
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
        evidence(sub_ctx, sub_report)
        try:
            results[sub] = SUITES[sub](sub_ctx, sub_report)
        except Exception as err:  # one suite's failure must not lose the others
            section = sub_report.section(f"{sub}: failed")
            section.text(f"The suite stopped: `{type(err).__name__}: {err}`")
            results[sub] = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        sub_report.write(sub_ctx.out, {"suite": sub, sub: results[sub]})
        combined.sections += sub_report.sections[1:]  # one evidence section for all
    combined.write(ctx.out, results)
    return results


def evidence(ctx: Context, report: Report, suite: str = "paper") -> None:
    """The report's first section: how much evidence it holds (rows, seeds, epochs, quick).
    A tune's trials and a tuned comparison's runs train with the study's budget, not ctx.train."""
    rows = ", ".join(f"{s} {ctx.data.num_rows(s):,}" for s in ("train", "valid", "test"))
    section = report.section("Evidence in this report")
    section.text(
        f"- data: `{ctx.data.path}`, rows {rows}\n"
        f"- seeds: {len(ctx.seeds)} ({', '.join(map(str, ctx.seeds))})"
        + (" (grids: the first only)" if ctx.quick and len(ctx.seeds) > 1 else "")
        + "\n"
        + _training(ctx, suite)
        + (
            "- **quick run** (`--quick`): the most recent rows of each split and one epoch; it "
            "says that everything runs, not which model wins"
            if ctx.quick
            else "- full run (not `--quick`)"
        )
    )


def _training(ctx: Context, suite: str) -> str:
    """The Evidence line on how the report's runs trained."""
    if ctx.tuned is not None:
        budget = ctx.tuned["budget"]
        return (
            "- training: each model's best configuration of the tune (its lr, batch size and "
            "options, in the Tuning section), with the trials' budget: at most "
            f"{budget['epochs']} epoch(s), validation every quarter epoch, early stopping after "
            f"{budget['patience']} evaluations without improvement\n"
        )
    if suite == "tune":
        return (
            "- training: each trial's sampled configuration, with the study's budget (the "
            "Tuning section)\n"
        )
    train = TrainConfig(**ctx.train)
    return (
        f"- training: at most {train.epochs} epoch(s), batch {train.batch_size}, "
        f"{train.optimizer} lr {train.lr:g}, early stopping after {train.patience} "
        "evaluations without improvement\n"
    )


__all__ = ["ALL", "QUICK_ROWS", "QUICK_TRAIN", "SUITES", "Context", "run_suite"]
