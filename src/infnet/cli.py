"""The `infnet` command. Each subcommand lives beside the code it drives; this file only
wires them together, importing heavy modules (torch) inside the commands that need them."""

from __future__ import annotations

import sys

import typer

from infnet import demo as demo_module
from infnet.abtest import commands as abtest_commands
from infnet.data.sources import amazon_books, kuairand, movielens, synthetic, table, tenrec
from infnet.experiments import commands as experiments
from infnet.serving import commands as serving
from infnet.streaming import commands as stream_commands
from infnet.training import commands as training

app = typer.Typer(
    name="infnet",
    help="Multi-task ranking for recommendation and advertising, built around INFNet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
prepare_app = typer.Typer(
    help="Prepare a dataset directory from raw files or the simulator.", no_args_is_help=True
)
app.add_typer(prepare_app, name="prepare")

prepare_app.command("kuairand")(kuairand.command)
prepare_app.command("synthetic")(synthetic.command)
prepare_app.command("table")(table.command)
prepare_app.command("movielens")(movielens.command)
prepare_app.command("amazon-books")(amazon_books.command)
prepare_app.command("tenrec")(tenrec.command)
app.command("train")(training.train)
app.command("evaluate")(training.evaluate)
app.command("models")(training.models)
app.command("demo")(demo_module.demo)
app.command("abtest")(abtest_commands.abtest)
app.command("experiment")(experiments.experiment)
app.command("export")(serving.export)
app.add_typer(serving.serve_app, name="serve")
app.command("loadtest")(serving.loadtest)
app.add_typer(stream_commands.stream_app, name="stream")


def main() -> None:
    """Run the app; expected errors (bad input, config, checkpoint) print one line, no traceback."""
    from infnet.config import ConfigError

    try:
        app()
    except (ConfigError, FileNotFoundError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"infnet: error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
