"""`infnet stream ...`: the streaming processes, one command each."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

stream_app = typer.Typer(
    help="Streaming training: join the server's impressions with delayed labels into samples.",
    no_args_is_help=True,
)


@stream_app.command("matcher")
def matcher(
    events: Annotated[
        str,
        typer.Option(help="Event log the server writes: a SQLite file or redis://HOST:PORT/DB."),
    ],
    state: Annotated[
        Path, typer.Option(help="SQLite file of the matcher: its state, offsets and samples.")
    ],
    schema: Annotated[
        Path,
        typer.Option(help="The served model's directory (or a prepared dataset): its tasks."),
    ],
    config: Annotated[
        Path | None,
        typer.Option(help="YAML of the windows: windows_s, lateness_s, orphan_grace_s, ..."),
    ] = None,
    drain: Annotated[
        bool, typer.Option(help="Read the streams to the end, close every window, and stop.")
    ] = False,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on 127.0.0.1:PORT.")
    ] = None,
    idle_s: Annotated[float, typer.Option(help="Pause when both streams are read up.")] = 0.5,
) -> None:
    """Join impressions with their labels into samples, until stopped (or with --drain, once)."""
    from rich.console import Console

    from infnet.config import load_yaml, validate
    from infnet.data.schema import Schema
    from infnet.streaming.events import EventLogUnavailable, open_event_log
    from infnet.streaming.label_matcher import LabelMatcher, MatcherConfig
    from infnet.streaming.metrics import MatcherMetrics

    schema_file = schema / "schema.json" if schema.is_dir() else schema
    if not schema_file.is_file():
        raise typer.BadParameter(f"{schema_file}: no schema.json there", param_hint="--schema")
    settings = validate(
        MatcherConfig, load_yaml(config) if config else {}, where=str(config or "matcher")
    )
    try:
        m = LabelMatcher(open_event_log(events), state, Schema.load(schema_file), settings)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--config") from None
    console = Console(stderr=True)
    metrics = MatcherMetrics(m, metrics_port) if metrics_port is not None else None
    started, last_print = time.monotonic(), 0.0
    try:
        while True:
            try:
                read = m.step()
            except EventLogUnavailable as err:
                console.print(f"[yellow]{err}; retrying[/]")
                time.sleep(1.0)
                continue
            if metrics is not None:
                metrics.update()
            now = time.monotonic()
            if now - last_print > 5 or (read == 0 and drain):
                c = m.counts
                dead = sum(v for k, v in c.items() if k.startswith("dead:"))
                console.print(
                    f"[{now - started:7.1f}s] impressions {c['impressions']:,} labels {c['labels']:,} "
                    f"samples {c['samples']:,} dead letters {dead:,} open {m.state_sizes()['open']:,}"
                )
                last_print = now
            if read == 0:
                if drain:
                    m.step(drain=True)
                    break
                time.sleep(idle_s)
    except KeyboardInterrupt:
        pass
    finally:
        c = m.counts
        console.print(
            f"samples {c['samples']:,}; dead letters "
            + ", ".join(f"{k[5:]} {v:,}" for k, v in sorted(c.items()) if k.startswith("dead:"))
        )
        m.close()


@stream_app.command("samples")
def samples(
    state: Annotated[Path, typer.Option(help="The matcher's SQLite file.")],
    out: Annotated[Path, typer.Option(help="Directory of the sample parts.")],
    schema: Annotated[Path, typer.Option(help="The served model's directory: its schema.json.")],
    part_rows: Annotated[int, typer.Option(help="Samples per part.")] = 4096,
    drain: Annotated[
        bool, typer.Option(help="Write what there is (a last short part too), and stop.")
    ] = False,
    idle_s: Annotated[float, typer.Option(help="Pause when no full part is waiting.")] = 1.0,
) -> None:
    """Write the matcher's samples as Parquet parts, until stopped (or with --drain, once)."""
    from infnet.streaming.samples import SampleWriter

    writer = SampleWriter(state, out, schema / "schema.json" if schema.is_dir() else schema,
                          part_rows=part_rows)  # fmt: skip
    total = 0
    try:
        while True:
            n = writer.flush(force=drain)
            total += n
            if n:
                print(f"samples: {total:,} written, up to #{writer.written_to:,}", flush=True)
            if drain:
                break
            if not n:
                time.sleep(idle_s)
    except KeyboardInterrupt:
        pass


@stream_app.command("trainer")
def trainer(
    start: Annotated[
        Path, typer.Option(help="Run directory (best.pt) or model directory to start from.")
    ],
    samples: Annotated[Path, typer.Option(help="Directory of the sample parts.")],
    out: Annotated[Path, typer.Option(help="Directory of the trainer's state (state.pt).")],
    batch_size: Annotated[int, typer.Option(help="Samples per update.")] = 256,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: the run's).")] = None,
    commit_every: Annotated[int, typer.Option(help="Updates per atomic commit.")] = 1,
    holdout: Annotated[
        float, typer.Option(help="Share of samples kept out for the publisher.")
    ] = 0.05,
    drain: Annotated[
        bool, typer.Option(help="Train on what there is (a last short batch too), and stop.")
    ] = False,
    idle_s: Annotated[float, typer.Option(help="Pause when no full batch is waiting.")] = 1.0,
) -> None:
    """Update the model from the sample parts as they come, committing its state atomically."""
    from infnet.streaming.online_trainer import OnlineTrainer

    t = OnlineTrainer(start, samples, out, batch_size=batch_size, lr=lr,
                      commit_every=commit_every, holdout=holdout)  # fmt: skip
    try:
        while True:
            n = t.run(flush=drain)
            if n:
                print(f"trainer: {t.steps:,} updates, {t.trained:,} samples, offset #{t.offset:,}",
                      flush=True)  # fmt: skip
            if drain:
                break
            if not n:
                time.sleep(idle_s)
    except KeyboardInterrupt:
        pass
