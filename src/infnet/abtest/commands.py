"""`infnet abtest`: the command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError


def abtest(
    out: Annotated[
        Path, typer.Option(help="Directory for the data, models, server and report.")
    ] = Path("abtest"),
    days: Annotated[int, typer.Option(help="Simulated test days.")] = 30,
    users: Annotated[int, typer.Option(help="Simulated users.")] = 2500,
    items: Annotated[int, typer.Option(help="Simulated items (15% of them ads).")] = 2000,
    control: Annotated[str, typer.Option(help="The control arm's model.")] = "production",
    treatment: Annotated[str, typer.Option(help="The treatment arm's model.")] = "infnet",
    treatment_share: Annotated[
        float, typer.Option(help="Share of the user buckets in treatment.")
    ] = 0.5,
    aa: Annotated[
        bool, typer.Option("--aa", help="A/A: both arms serve the control model, no updates.")
    ] = False,
    updates: Annotated[
        bool, typer.Option(help="Nightly streaming updates of each arm's model.")
    ] = True,
    warmup_days: Annotated[
        int, typer.Option(help="Days of random slates to train the arms on.")
    ] = 7,
    formula: Annotated[
        str | None, typer.Option(help="Ranking formula over the tasks and bid.")
    ] = None,
    conversion: Annotated[bool, typer.Option(help="Ads pay per conversion after a click.")] = False,
    epochs: Annotated[int, typer.Option(help="Epochs of the arms' offline training.")] = 2,
    online_lr: Annotated[
        float | None,
        typer.Option(help="Learning rate of the nightly updates (default: the run's)."),
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Run an online A/B test of two rankers on the simulated ad platform through a real
    `infnet serve` with two arms: business lifts with intervals, p-values and the true lifts,
    the weekly trend, system metrics per arm (about 25 minutes at the defaults on 2 cores)."""
    from rich.console import Console

    from infnet.abtest.config import ABConfig
    from infnet.abtest.run import ABTest

    fields = dict(days=days, users=users, items=items, control=control, treatment=treatment,
                  treatment_share=treatment_share, aa=aa, updates=updates,
                  warmup_days=warmup_days, conversion=conversion, epochs=epochs,
                  online_lr=online_lr, seed=seed)  # fmt: skip
    if formula is not None:
        fields["formula"] = formula
    try:
        config = ABConfig(**fields)
    except ValidationError as err:
        problems = "; ".join(
            (f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in err.errors()
        )
        raise typer.BadParameter(problems) from None
    console = Console(stderr=True)
    test = ABTest(config, out, console)
    test.setup()
    test.run()
    console.print(f"report: {out / 'report.md'}, {out / 'index.html'}")
    if test.stopped:
        raise typer.Exit(1)
