"""`infnet experiment SUITE --data PREPARED --out DIR`: the source document's experiments."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from infnet.experiments.space import Space

console = Console(stderr=True)


def experiment(
    suite: Annotated[
        str,
        typer.Argument(
            help="compare, variants, correlation, ablation, proxies, efficiency, scaling, attention, paper (all of these) or tune."
        ),
    ],
    data: Annotated[Path, typer.Option(help="Prepared dataset directory.")],
    out: Annotated[
        Path, typer.Option(help="Report folder (results.json, report.md, index.html, PNGs).")
    ] = Path("experiments"),
    seeds: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Seeds per configuration (default 3; 1 with --quick and for tune, whose trials train seed 0).",
        ),
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option(help="Models to compare (repeat or comma-separate); default all registered."),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            help="1 epoch, batch 256, on the last 30k train / 5k valid / 10k test rows, 1 seed, short grids."
        ),
    ] = False,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Override the epochs of every run.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="TrainConfig override for every run, e.g. batch_size=1024."),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(help="Run cache folder (default OUT/runs); shared runs are trained once."),
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option(help="attention: a trained INFNet run directory (else one is trained)."),
    ] = None,
    latency_batch: Annotated[
        int, typer.Option(min=1, help="Rows per batch when measuring inference.")
    ] = 1024,
    workers: Annotated[
        int,
        typer.Option(min=1, help="Training runs in parallel, each in its own process (default 1)."),
    ] = 1,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="Torch threads of each worker (default: CPU cores / workers)."),
    ] = None,
    procs: Annotated[
        int,
        typer.Option(min=1, help="Processes of each training run (DistributedDataParallel)."),
    ] = 1,
    trials: Annotated[
        int, typer.Option(min=1, help="tune: finished trials per model (the same for every model).")
    ] = 20,
    space: Annotated[
        Path | None,
        typer.Option(help="tune: search space YAML/JSON (default: experiments/space.py's)."),
    ] = None,
    tuned: Annotated[
        Path | None,
        typer.Option(
            help="compare: train each model's best configuration of this tune (its OUT or tuned.json)."
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run an experiment suite of the source document (chapter 4) and write its report."""
    from infnet.data.loader import PreparedDataset, RowLimit
    from infnet.experiments.runner import Runner
    from infnet.experiments.suites import ALL, QUICK_ROWS, QUICK_TRAIN, Context, run_suite
    from infnet.fsutil import refuse_overlap
    from infnet.models import model_class

    if suite not in ALL:
        raise typer.BadParameter(
            f"unknown suite {suite!r}; suites: {', '.join(ALL)}", param_hint="SUITE"
        )
    names = [m.strip() for item in models or [] for m in item.split(",") if m.strip()] or None
    # tune's labels may be the space's variants, and compare --tuned's the tune's labels:
    # both are checked against those in _tuning_inputs and tuned_specs
    plain = suite != "tune" and tuned is None
    for name in (names or []) if plain else []:
        try:
            model_class(name)
        except KeyError as err:
            raise typer.BadParameter(err.args[0], param_hint="--models") from None
    refuse_overlap(out, [data])
    if cache is not None:
        refuse_overlap(cache, [data], "--cache")
    search, outcome = _tuning_inputs(suite, space, tuned, names)
    dataset = RowLimit(data, QUICK_ROWS) if quick else PreparedDataset(data)
    train = dict(QUICK_TRAIN) if quick else {}
    if suite == "tune":
        train["epochs"] = 2  # a trial's budget: one epoch is this slice's optimum for most
    if epochs is not None:
        train["epochs"] = epochs
    if set_:
        from infnet.config import apply_overrides, validate
        from infnet.training.config import TrainConfig

        train = apply_overrides(train, set_)
        validate(TrainConfig, train, where="--set")
    ctx = Context(
        data=dataset,
        out=out,
        runner=Runner(
            dataset,
            cache or out / "runs",
            progress=progress,
            console=console,
            workers=workers,
            threads=threads or max(1, (os.cpu_count() or 1) // (workers * procs)),
            procs=procs,
        ),
        seeds=list(range(seeds or (1 if quick or suite == "tune" else 3))),  # tune: seed 0
        models=names,
        quick=quick,
        train=train,
        infnet_run=run,
        console=console,
        latency_batch=latency_batch,
        reps=3 if quick else 5,
        trials=trials,
        space=search,
        tuned=outcome,
    )
    started = time.time()
    try:
        run_suite(suite, ctx)
    finally:
        ctx.runner.close()
    console.print(
        f"{suite}: {ctx.runner.trained} run(s) trained in {time.time() - started:.0f}s; "
        f"report: {out / 'report.md'}, {out / 'index.html'}"
    )


def _tuning_inputs(
    suite: str, space: Path | None, tuned: Path | None, names: list[str] | None
) -> tuple[Space | None, dict[str, Any] | None]:
    """tune's search space (checked against the models it tunes) and compare's --tuned
    outcome, each bad input one message naming its option."""
    from infnet.experiments.space import DEFAULT_SPACE, check_space, load_space
    from infnet.experiments.tune import load_tuned
    from infnet.models import available_models

    if tuned is not None and suite != "compare":
        raise typer.BadParameter("--tuned goes with the compare suite", param_hint="--tuned")
    search = None
    if space is not None:
        try:
            search = load_space(space)
        except (OSError, ValueError) as err:
            raise typer.BadParameter(str(err), param_hint="--space") from None
    if suite == "tune":
        searched = search or DEFAULT_SPACE
        try:
            labels = names or [*available_models(), *searched.variants]
            check_space(searched, labels, str(space or "space"))
        except KeyError as err:
            raise typer.BadParameter(str(err.args[0]), param_hint="--models") from None
        except ValueError as err:
            raise typer.BadParameter(str(err.args[0]), param_hint="--space") from None
    outcome = None
    if tuned is not None:
        try:
            outcome = load_tuned(tuned)
        except (OSError, ValueError) as err:
            raise typer.BadParameter(str(err), param_hint="--tuned") from None
    return search, outcome
