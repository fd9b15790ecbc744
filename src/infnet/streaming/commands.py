"""`infnet stream ...`: the streaming processes, one command each."""

from __future__ import annotations

import json
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


def _until_stopped(work, report, drain: bool, idle_s: float) -> None:
    """Repeat `work` (it returns how much it did), reporting progress and idling when there
    was nothing to do; once with `drain`; until Ctrl-C."""
    try:
        while True:
            if work():
                print(report(), flush=True)
            elif not drain:
                time.sleep(idle_s)
            if drain:
                break
    except KeyboardInterrupt:
        pass


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
    _until_stopped(
        lambda: writer.flush(force=drain),
        lambda: f"samples: written up to #{writer.written_to:,}",
        drain, idle_s,
    )  # fmt: skip


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
    _until_stopped(
        lambda: t.run(flush=drain),
        lambda: f"trainer: {t.steps:,} updates, {t.trained:,} samples, offset #{t.offset:,}",
        drain, idle_s,
    )  # fmt: skip


def _publisher(trainer_dir, samples, versions, serving, server, arm, config):
    import os

    from infnet.config import load_yaml, validate
    from infnet.serving.config import ADMIN_TOKEN_ENV
    from infnet.streaming.publisher import Publisher, PublisherConfig

    settings = validate(
        PublisherConfig, load_yaml(config) if config else {}, where=str(config or "publisher")
    )
    return Publisher(trainer_dir, samples, versions, serving=serving, server=server,
                     token=os.environ.get(ADMIN_TOKEN_ENV), arm=arm, config=settings)  # fmt: skip


ServerOption = Annotated[
    str | None,
    typer.Option(
        help="Server to swap versions into (/admin/reload, token from INFNET_ADMIN_TOKEN)."
    ),
]


@stream_app.command("publisher")
def publisher(
    trainer_dir: Annotated[Path, typer.Option("--trainer", help="The online trainer's --out.")],
    samples: Annotated[Path, typer.Option(help="Directory of the sample parts.")],
    versions: Annotated[Path, typer.Option(help="Directory of the published versions.")],
    serving: Annotated[
        Path | None, typer.Option(help="The model directory served now (first start only).")
    ] = None,
    server: ServerOption = None,
    arm: Annotated[str | None, typer.Option(help="The A/B arm to swap.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML: every_samples, every_s, margin, window, keep.")
    ] = None,
    once: Annotated[bool, typer.Option(help="Judge and publish once, now, and stop.")] = False,
    idle_s: Annotated[float, typer.Option(help="Pause between checks.")] = 5.0,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on 127.0.0.1:PORT.")
    ] = None,
) -> None:
    """Export the trainer's model every K samples or T seconds, judged against the serving one."""
    from prometheus_client import CollectorRegistry, start_http_server

    from infnet.streaming.metrics import PublisherMetrics

    p = _publisher(trainer_dir, samples, versions, serving, server, arm, config)
    registry = CollectorRegistry()
    metrics = PublisherMetrics(p, registry)
    if metrics_port is not None:
        start_http_server(metrics_port, "127.0.0.1", registry=registry)
    try:
        while True:
            if once or p.due():
                d = p.publish()
                print(json.dumps(d), flush=True)
            metrics.update()
            if once:
                break
            time.sleep(idle_s)
    except KeyboardInterrupt:
        pass


@stream_app.command("rollback")
def rollback(
    versions: Annotated[Path, typer.Option(help="Directory of the published versions.")],
    to: Annotated[str, typer.Option(help="The version to serve again, e.g. v000003.")],
    server: ServerOption = None,
    arm: Annotated[str | None, typer.Option(help="The A/B arm to swap.")] = None,
) -> None:
    """Serve an earlier published version again."""
    p = _publisher(versions, versions, versions, None, server, arm, None)
    print(json.dumps(p.rollback(to)), flush=True)


@stream_app.command("run")
def run(
    events: Annotated[str, typer.Option(help="Event log the server writes.")],
    start: Annotated[Path, typer.Option(help="Run or model directory the trainer starts from.")],
    serving: Annotated[Path, typer.Option(help="The model directory served now.")],
    out: Annotated[Path, typer.Option(help="Directory of everything the loop keeps.")],
    server: ServerOption = None,
    arm: Annotated[str | None, typer.Option(help="The A/B arm to swap.")] = None,
    matcher_config: Annotated[Path | None, typer.Option(help="Matcher YAML (windows).")] = None,
    publisher_config: Annotated[
        Path | None, typer.Option(help="Publisher YAML (cadence, margin).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Samples per update.")] = 256,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default: the run's).")] = None,
    part_rows: Annotated[int, typer.Option(help="Samples per part.")] = 4096,
    drain: Annotated[
        bool,
        typer.Option(help="Process what the log holds, close every window, publish once, stop."),
    ] = False,
    idle_s: Annotated[float, typer.Option(help="Pause when nothing is waiting.")] = 1.0,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on 127.0.0.1:PORT.")
    ] = None,
) -> None:
    """Matcher, sample producer, trainer and publisher in one process (the embedded loop):
    OUT/matcher.sqlite, OUT/samples/, OUT/trainer/, OUT/versions/."""
    import os

    from prometheus_client import start_http_server

    from infnet.config import load_yaml, validate
    from infnet.serving.config import ADMIN_TOKEN_ENV
    from infnet.streaming.events import EventLogUnavailable, open_event_log
    from infnet.streaming.label_matcher import MatcherConfig
    from infnet.streaming.loop import StreamLoop
    from infnet.streaming.publisher import PublisherConfig

    loop = StreamLoop(
        open_event_log(events), start, serving, out, server=server,
        token=os.environ.get(ADMIN_TOKEN_ENV), arm=arm,
        matcher=validate(MatcherConfig, load_yaml(matcher_config) if matcher_config else {},
                         where=str(matcher_config or "matcher")),
        publisher=validate(PublisherConfig, load_yaml(publisher_config) if publisher_config else {},
                           where=str(publisher_config or "publisher")),
        batch_size=batch_size, lr=lr, part_rows=part_rows,
    )  # fmt: skip
    if metrics_port is not None:
        start_http_server(metrics_port, "127.0.0.1", registry=loop.registry)
    try:
        while True:
            try:
                tick = loop.tick(drain=drain)
            except EventLogUnavailable as err:
                print(f"{err}; retrying", flush=True)
                time.sleep(1.0)
                continue
            if tick.decision is not None:
                print(json.dumps(tick.decision), flush=True)
            if tick.written or tick.steps:
                t = loop.trainer
                print(f"samples {loop.matcher.counts['samples']:,} written #{loop.writer.written_to:,} "
                      f"updates {t.steps if t else 0:,}", flush=True)  # fmt: skip
            if tick.read == 0:
                if drain:
                    break
                time.sleep(idle_s)
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()


def _date_ms(value: str, utc_offset_hours: float) -> int:
    from datetime import datetime, timedelta, timezone

    try:
        day = datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise typer.BadParameter(f"{value!r}: give a date as YYYY-MM-DD") from None
    tz = timezone(timedelta(hours=utc_offset_hours))
    return int(day.replace(tzinfo=tz).timestamp() * 1000)


@stream_app.command("replay")
def replay(
    data: Annotated[Path, typer.Option(help="Prepared dataset whose logged rows are replayed.")],
    server: Annotated[str, typer.Option(help="The server, e.g. http://127.0.0.1:8000.")],
    from_: Annotated[str, typer.Option("--from", help="First day replayed, YYYY-MM-DD.")],
    to: Annotated[str | None, typer.Option(help="Day the replay stops before, YYYY-MM-DD.")] = None,
    utc_offset_hours: Annotated[
        float, typer.Option(help="The dataset's local time (KuaiRand: 8).")
    ] = 8.0,
    delay_mean_s: Annotated[
        float, typer.Option(help="Mean delay of a label after its impression.")
    ] = 60.0,
    duplicate: Annotated[float, typer.Option(help="Share of callbacks sent twice.")] = 0.01,
    reorder: Annotated[
        float, typer.Option(help="Share of callbacks overtaken by the next.")
    ] = 0.05,
    drop: Annotated[float, typer.Option(help="Share of callbacks never sent.")] = 0.01,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Send a prepared dataset's rows through the server as requests and their labels as callbacks."""
    from infnet.streaming.replay import replay as run_replay

    stats = run_replay(
        data, server, since_ms=_date_ms(from_, utc_offset_hours),
        until_ms=_date_ms(to, utc_offset_hours) if to else None, delay_mean_s=delay_mean_s,
        duplicate=duplicate, reorder=reorder, drop=drop, seed=seed,
    )  # fmt: skip
    print(json.dumps(stats.__dict__), flush=True)
