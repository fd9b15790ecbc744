"""The tune suite (experiments/tune.py runs the studies) and what `compare --tuned` reports
of a tune: the budget each model spent, its best configuration, and the optimisation
history (the best validation score so far against the trial number)."""

from __future__ import annotations

import math
from typing import Any

from infnet.experiments import figures
from infnet.experiments.report import Report, fmt
from infnet.experiments.runner import RunSpec
from infnet.experiments.space import DEFAULT_SPACE, check_space
from infnet.experiments.suites.context import Context, figure_path
from infnet.experiments.tune import Budget, tune
from infnet.models import available_models


def run(ctx: Context, report: Report) -> dict[str, Any]:
    space = ctx.space or DEFAULT_SPACE
    models = ctx.models or [*available_models(), *space.variants]
    check_space(space, models)
    if ctx.runner.procs > 1:
        raise ValueError("tune: each trial trains in one process (--procs 1); use --workers")
    budget = Budget(trials=ctx.trials, epochs=ctx.train.get("epochs", Budget.epochs))
    base = {k: v for k, v in ctx.train.items() if k != "epochs"}
    outcome = tune(ctx.runner, models, space, budget, ctx.out, seed=ctx.seeds[0], base_train=base)
    section(ctx, report, outcome)
    return outcome


def section(ctx: Context, report: Report, outcome: dict[str, Any]) -> None:
    b = outcome["budget"]
    s = report.section("Tuning")
    s.text(
        f"One seeded TPE study per model (seed {outcome['seed']}), {b['trials']} trials each, "
        f"at most {b['epochs']} epoch(s) a trial with validation every quarter epoch, early "
        f"stopping after {b['patience']} evaluations without improvement, median pruning "
        "after the first epoch; the score is the validation monitor (test is never read); "
        "one trial of each study is the model's defaults. "
        f"Search space: {_describe(outcome['space'])}."
    )
    rows = []
    history: dict[str, tuple[list[float], list[float]]] = {}
    for model, m in outcome["models"].items():
        c, best = m["counts"], m["best"]
        config = (
            "-"
            if best is None
            else ", ".join(
                f"{k}={_short(v)}"
                for k, v in sorted({**best["options"], **best["train"]}.items())
                if k not in ("epochs", "eval_every", "patience")
            )
        )
        rows.append(
            [
                model,
                str(len(m["trials"])),
                f"{c['COMPLETE']} / {c['PRUNED']} / {c['FAIL']}",
                f"{m['seconds'] / 60:.1f}",
                "-" if best is None else fmt(best["value"]),
                _default_value(m["trials"]),
                "-" if best is None else str(best["trial"]),
                config,
            ]
        )
        running, xs, ys = -math.inf, [], []
        for t in m["trials"]:
            if t["state"] == "COMPLETE" and t["value"] is not None:
                running = max(running, t["value"])
            if math.isfinite(running):
                xs.append(t["number"])
                ys.append(running)
        history[model] = (xs, ys)
    s.table(
        [
            "model",
            "trials",
            "done / pruned / failed",
            "train min",
            "best valid",
            "default's valid",
            "trial",
            "best config",
        ],
        rows,
        caption="Budget spent and best configuration per model",
    )
    failed = [
        [model, str(t["number"]), t["error"] or ""]
        for model, m in outcome["models"].items()
        for t in m["trials"]
        if t["state"] == "FAIL" and not t["interrupted"]
    ]
    if failed:
        s.table(["model", "trial", "error"], failed, caption="Failed trials (the study went on)")
    if any(xs for xs, _ in history.values()):
        path = figures.training_curves(
            history,
            "Optimisation history",
            "trial",
            "best validation score so far",
            figure_path(ctx, "tuning_history"),
        )
        s.figure(path, "Best validation score so far against the trial number, per model")


def tuned_specs(ctx: Context, outcome: dict[str, Any]) -> list[RunSpec]:
    """Each model's best configuration of a tune, for every seed: what `compare --tuned` trains."""
    models = ctx.models or list(outcome["models"])
    missing = [m for m in models if (outcome["models"].get(m) or {}).get("best") is None]
    if missing:
        have = [m for m, v in outcome["models"].items() if v.get("best")]
        raise ValueError(
            f"--tuned: no finished trial for {', '.join(missing)}; tuned models: {', '.join(have)}"
        )
    return [
        RunSpec(
            label=m,
            model=outcome["models"][m].get("model", m),
            options=outcome["models"][m]["best"]["options"],
            train={**ctx.train, **outcome["models"][m]["best"]["train"]},
            seed=seed,
        )
        for m in models
        for seed in ctx.seeds
    ]


def _default_value(trials: list[dict[str, Any]]) -> str:
    """The validation score of the trial of the model's defaults (a tune of older code has none)."""
    done = [t for t in trials if t.get("default") and t["state"] == "COMPLETE"]
    return fmt(done[0]["value"]) if done else "-"


def _describe(space: dict[str, Any]) -> str:
    """The space of tuned.json in words: `lr` 1e-4..3e-3 (log), `embedding_dim` {16, 32}, ..."""

    def params(ps: dict[str, Any]) -> str:
        return ", ".join(
            f"`{k}` {{{', '.join(map(str, p['choices']))}}}"
            if "choices" in p
            else f"`{k}` {p['low']:g}..{p['high']:g}" + (" (log)" if p["log"] else "")
            for k, p in ps.items()
        )

    text = params(space["params"])
    for model, ps in space.get("models", {}).items():
        text += f"; {model}: {params(ps)}"
    for label, v in space.get("variants", {}).items():
        text += f"; variant {label}: {v['model']} with {v['options']}"
    return text


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
