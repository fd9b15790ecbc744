"""`infnet export`, `infnet serve`, `infnet serve load-features`, `infnet loadtest`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def export(
    run: Annotated[Path, typer.Option(help="Run directory written by `infnet train`.")],
    out: Annotated[Path, typer.Option(help="Model directory to write.")],
    onnx: Annotated[
        bool,
        typer.Option(
            "--onnx/--no-onnx", help="Export model.onnx (else weights only: serve with --eager)."
        ),
    ] = True,
    atol: Annotated[
        float, typer.Option(help="Largest accepted |ONNX Runtime - eager| on real batches.")
    ] = 1e-5,
    exporter: Annotated[
        str, typer.Option(help="auto (TorchScript tracer, then dynamo), torchscript or dynamo.")
    ] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing model directory.")] = False,
) -> None:
    """Export a run's best checkpoint: model.onnx (checked against eager PyTorch), weights, schema, vocabularies, version."""
    from infnet.serving.export import export_run

    with console.status(f"exporting {run}"):
        info = export_run(run, out, onnx=onnx, atol=atol, exporter=exporter, overwrite=overwrite)
    parity = info.get("parity")
    check = (
        f" ({parity['exporter']}); ONNX Runtime vs eager max |diff| {parity['max_abs_diff']:.2g} on {parity['rows']} {info['split']} rows"
        if parity
        else ""
    )
    console.print(f"exported {info['version']} -> {out}{check}")
    print(json.dumps(info))


serve_app = typer.Typer(
    help="Serve models over HTTP (`infnet serve --model DIR --store URL`), or load the feature store.",
    invoke_without_command=True,
)


@serve_app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    model: Annotated[
        Path | None, typer.Option(help="Model directory written by `infnet export`.")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(help="Feature store: a SQLite file, sqlite:///PATH or redis://HOST:PORT/DB."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Server YAML (arms, ranking formula, limits, admin token).")
    ] = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    eager: Annotated[
        bool | None,
        typer.Option("--eager/--onnx", help="Run eager PyTorch instead of ONNX Runtime."),
    ] = None,
    request_log: Annotated[str | None, typer.Option(help="SQLite file of the request log.")] = None,
    event_log: Annotated[
        str | None,
        typer.Option(
            help="Event log for streaming training (impressions, POST /v1/events labels): "
            "a SQLite file, sqlite:///PATH or redis://HOST:PORT/DB."
        ),
    ] = None,
    max_candidates: Annotated[
        int | None, typer.Option(help="Longest accepted candidate list.")
    ] = None,
    max_wait_ms: Annotated[
        float | None, typer.Option(help="Micro-batching: longest wait for more requests.")
    ] = None,
) -> None:
    """Start the inference server (the admin token comes from the config or INFNET_ADMIN_TOKEN)."""
    if ctx.invoked_subcommand is not None:
        return
    if model is None and config is None:
        raise typer.BadParameter(
            "give --model MODEL_DIR (or --config with arms)", param_hint="--model"
        )
    from infnet.malloc import few_malloc_arenas

    few_malloc_arenas()  # first, before torch's and ONNX Runtime's threads (its docstring)
    from infnet.serving.config import load_server_config
    from infnet.serving.server import run_server

    settings = load_server_config(
        config,
        model=str(model) if model else None,
        store=store,
        eager=eager,
        request_log=request_log,
        event_log=event_log,
        max_candidates=max_candidates,
        max_wait_ms=max_wait_ms,
    )
    run_server(settings, host, port)


@serve_app.command("load-features")
def load_features(
    data: Annotated[Path, typer.Option(help="Prepared dataset directory.")],
    store: Annotated[
        str,
        typer.Option(help="Feature store: a SQLite file, sqlite:///PATH or redis://HOST:PORT/DB."),
    ] = "features.sqlite",
    as_of: Annotated[
        int | None,
        typer.Option(help="Load only rows and events before this time (ms since the epoch)."),
    ] = None,
) -> None:
    """Load user features, item features and recent behaviour histories as a new feature version."""
    import time

    from infnet.serving.snapshot import snapshot_from_prepared
    from infnet.serving.stores import StoreUnavailable, open_store

    started = time.perf_counter()
    with console.status(f"reading {data}"):
        snapshot = snapshot_from_prepared(data, as_of=as_of)
    target = open_store(store)
    try:
        with console.status(
            f"writing {snapshot.meta.users:,} users and {snapshot.meta.items:,} items to {target.url}"
        ):
            target.write(snapshot)
    except StoreUnavailable as err:
        console.print(f"infnet: error: {err}")
        raise typer.Exit(2) from None
    finally:
        target.close()
    m = snapshot.meta
    console.print(
        f"feature version {m.version}: {m.users:,} users, {m.items:,} items, histories of {m.history_len} "
        f"x {len(m.behaviours)} behaviours -> {target.url} ({time.perf_counter() - started:.1f}s)"
    )
    print(
        json.dumps({"version": m.version, "users": m.users, "items": m.items, "store": target.url})
    )


def loadtest(
    url: Annotated[str, typer.Option(help="Server base URL, e.g. http://127.0.0.1:8000.")],
    data: Annotated[
        Path, typer.Option(help="Prepared dataset whose users and items the requests use.")
    ],
    qps: Annotated[float, typer.Option(help="Requests per second (open loop).")] = 50.0,
    duration: Annotated[float, typer.Option(help="Seconds of load.")] = 10.0,
    candidates: Annotated[int, typer.Option(help="Candidates per request.")] = 100,
    server_pid: Annotated[
        int | None, typer.Option(help="Server process id for RSS / CPU (else read from /metrics).")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the report JSON here.")] = None,
) -> None:
    """Open-loop load at a fixed rate: latency percentiles, achieved QPS, errors, server RSS and CPU."""
    from infnet.serving.loadtest import report_table, run_loadtest

    report = run_loadtest(
        url,
        data,
        qps=qps,
        duration_s=duration,
        candidates=candidates,
        server_pid=server_pid,
        seed=seed,
    )
    console.print(report_table(report))
    text = json.dumps(report, indent=2)
    if out is not None:
        out.write_text(text)
    print(text)
