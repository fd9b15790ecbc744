"""The `infnet` command. Each subcommand lives beside the code it drives; this file only
wires them together, importing heavy modules (torch) inside the commands that need them."""

from __future__ import annotations

import typer

from infnet.data.sources import kuairand, synthetic

app = typer.Typer(
    name="infnet",
    help="Multi-task ranking for recommendation and advertising, built around INFNet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
prepare_app = typer.Typer(help="Prepare a dataset directory from raw files or the simulator.", no_args_is_help=True)
app.add_typer(prepare_app, name="prepare")

prepare_app.command("kuairand")(kuairand.command)
prepare_app.command("synthetic")(synthetic.command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
