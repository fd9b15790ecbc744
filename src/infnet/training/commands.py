"""`infnet train` and `infnet evaluate`."""

from __future__ import annotations

import difflib
import json
import os
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from infnet.config import ConfigError, apply_overrides, load_yaml
from infnet.fsutil import refuse_overlap

console = Console()

_TOP = ("data", "model", "model_options", "train")


def _expand(overrides: list[str], model_keys: list[str], train_keys: list[str]) -> list[str]:
    """`--set lr=1e-3` means train.lr, `--set num_blocks=3` means model_options.num_blocks."""
    out = []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        head = key.split(".")[0]
        if head in _TOP:
            out.append(item)
        elif key in train_keys and key in model_keys:
            raise ConfigError(f"--set {key}: ambiguous; write train.{key} or model_options.{key}")
        elif key in train_keys:
            out.append(f"train.{item}")
        elif key in model_keys:
            out.append(f"model_options.{item}")
        else:
            valid = list(_TOP) + train_keys + model_keys
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"--set {key}: unknown key{hint}")
    return out


def resolve_run_config(
    data: Path | None, model: str | None, config: Path | None, overrides: list[str]
) -> Any:
    from infnet.config import validate
    from infnet.models import model_class
    from infnet.training.config import RunConfig, TrainConfig

    raw: dict[str, Any] = load_yaml(config) if config else {}
    if data is not None:
        raw["data"] = str(data)
    if model is not None:
        raw["model"] = model
    if "data" not in raw:
        raise ConfigError("no dataset: pass --data PREPARED or set `data:` in the config file")
    cls = model_class(raw.get("model", "infnet"))
    raw = apply_overrides(
        raw, _expand(overrides, list(cls.Config.model_fields), list(TrainConfig.model_fields))
    )
    run = validate(RunConfig, raw, where=str(config) if config else "config")
    validate(cls.Config, run.model_options, where="model_options")
    return run


def train(
    data: Annotated[
        Path | None,
        typer.Option(help="Prepared dataset directory [required unless --config sets `data:`]."),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model name (see `infnet models`) [default: infnet].")
    ] = None,
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/run"),
    config: Annotated[
        Path | None, typer.Option(help="YAML with data, model, model_options, train.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="key=value override, e.g. train.lr=3e-4 or num_blocks=2."),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted run from OUT/last.pt.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    nproc: Annotated[
        int,
        typer.Option(
            min=1,
            help="Train in N processes with DistributedDataParallel (launches torchrun; "
            "the global batch is train.batch_size, split across them).",
        ),
    ] = 1,
    list_options: Annotated[
        bool,
        typer.Option(
            "--list-options",
            help="Print every --set key (train, and the --model's options) with its default; exit.",
        ),
    ] = False,
) -> None:
    """Train a model on a prepared dataset; writes config, metrics.jsonl, checkpoints, test metrics.

    Defaults are the paper's (20 epochs, batch 4096, patience 5): hours on a CPU for a real dataset. For a first run: --set epochs=1 --set batch_size=1024 (KuaiRand-Pure: 83 s an epoch for INFNet on one thread, the README's results table). `infnet train --list-options [--model M]` lists every --set key with its default.

    Budgets: --set epochs=N, --set max_steps=N (optimiser steps), --set time_limit_s=S (seconds of training, counted across --resume); the first reached ends training, and the best checkpoint so far is kept and scored on test.

    Tasks: --set task_weighting=fixed|uncertainty|normalised (how the task losses combine); --set selection=monitor|weighted|all_tasks and --set monitor=mtl_auc|TASK.METRIC (which checkpoint is kept). A task below chance or collapsed is flagged in log.txt, metrics.jsonl, test_metrics.json and here.

    Several processes: --nproc N, or `torchrun --nproc-per-node N -m infnet train ...` (docs/scaling.md); --set loader=parts --set memory_budget_mb=M streams the splits from their part files in M MB.
    """
    if list_options:
        print_options(model or "infnet")
        return
    run = resolve_run_config(data, model, config, set_ or [])
    refuse_overlap(out, [Path(run.data)])
    replace = out.exists() and any(out.iterdir()) and not resume
    if replace and not overwrite:
        raise typer.BadParameter(
            f"{out} exists; pass --resume to continue it or --overwrite to replace it",
            param_hint="--out",
        )
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        sys.exit(launch(nproc))
    from infnet.training import distributed

    try:
        _train(run, out, replace=replace, resume=resume, progress=progress)
    except distributed.DistributedError as err:
        print(f"infnet: error: {err}", file=sys.stderr)
        sys.exit(2)
    finally:
        distributed.shut_down()


def launch(nproc: int) -> int:
    """This command again under torchrun in `nproc` processes (without --nproc); its exit
    status. torchrun stops every rank when one fails and names the rank that did."""
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", str(nproc), "-m", "infnet", *args]
    code = subprocess.run(command).returncode
    if code:
        print(
            f"infnet: error: the {nproc}-process run failed (exit {code}); torchrun's summary "
            "above names the failed rank",
            file=sys.stderr,
        )
    return code


def _train(run: Any, out: Path, *, replace: bool, resume: bool, progress: bool) -> None:
    from infnet.training.config import resolve_device
    from infnet.training.distributed import from_environment
    from infnet.training.tables import rich_table
    from infnet.training.trainer import Trainer

    group = from_environment(resolve_device(run.train.device))
    main = group is None or group.is_main
    if replace and main:
        shutil.rmtree(out)
    if group is not None:
        group.barrier()  # the old run is gone before any rank looks for last.pt
    trainer = Trainer.from_config(run, out, progress=progress, group=group)
    tc = run.train
    say = console.print if main else (lambda *a, **k: None)
    where = f" in {group.world_size} processes" if group else ""
    say(
        f"training {run.model}: at most {trainer.total_steps:,} steps ({tc.epochs} epochs of "
        f"{trainer.steps_per_epoch:,} batches of {tc.batch_size}{where}); early stopping "
        f"after {tc.patience} evaluations without improvement may end it sooner"
    )
    if resume and trainer.resume():
        say(f"resumed {out} at epoch {trainer.epoch}, step {trainer.global_step}")
    result = trainer.fit()
    say(rich_table(trainer.schema, {run.model: result["test"]}, title=f"test metrics ({out})"))
    for flag in result["flags"]:  # also in log.txt and test_metrics.json
        say(f"[yellow]flagged task[/yellow] {flag}")


def print_options(model: str) -> None:
    """Every --set key: the train config's, then the model's options, with defaults."""
    from rich.table import Table

    from infnet.models import model_class
    from infnet.training.config import TrainConfig

    for title, cls in (
        ("train (--set KEY=V or train.KEY=V)", TrainConfig),
        (f"model {model} (--set KEY=V or model_options.KEY=V)", model_class(model).Config),
    ):
        table = Table(title=title, title_justify="left")
        table.add_column("key")
        table.add_column("default")
        table.add_column("type")
        for name, f in cls.model_fields.items():
            default = f.get_default(call_default_factory=True)
            shown = "none" if default is None else json.dumps(default, default=str)
            table.add_row(name, shown, _type_name(f.annotation))
        console.print(table)


def _type_name(annotation: Any) -> str:
    """int, float | None, or a Literal's choices as a | b | c."""
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(map(str, typing.get_args(annotation)))
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def evaluate(
    run: Annotated[Path, typer.Option(help="Run directory written by `infnet train`.")],
    split: Annotated[str, typer.Option(help="train, valid or test.")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Score a run's best checkpoint on a split: AUC, gAUC, LogLoss (and MAE, RMSE, R2), MTL averages."""
    from infnet.training.evaluation import evaluate_split
    from infnet.training.rundir import load_run
    from infnet.training.selection import task_flags
    from infnet.training.tables import rich_table

    if split not in ("train", "valid", "test"):
        raise typer.BadParameter(
            f"unknown split {split!r}; use train, valid or test", param_hint="--split"
        )
    config, model, data = load_run(run)
    result = evaluate_split(model, data, split)
    flags = task_flags(data.schema, result, split=split)
    if as_json:
        print(json.dumps({**result, "flags": flags}, indent=2))
    else:
        console.print(
            rich_table(data.schema, {config.model: result}, title=f"{split} metrics ({run})")
        )
        for flag in flags:
            console.print(f"[yellow]flagged task[/yellow] {flag}")


def models() -> None:
    """List the registered models."""
    import sys

    from rich.table import Table

    from infnet.models import available_models, model_class

    table = Table(show_header=True, show_lines=True)
    table.add_column("model", style="bold", no_wrap=True)
    table.add_column("what it is (the module's description)")
    for name in available_models():
        cls = model_class(name)
        doc = (sys.modules[cls.__module__].__doc__ or cls.__doc__ or "").strip()
        first = doc.split("\n\n")[0]  # the whole first paragraph, not its first line
        table.add_row(name, " ".join(first.split()))
    console.print(table)
