"""The hub (v1: proxy) sweeps (source document 4.4.2, paper Fig. 4): AUC, latency and peak
memory as the hub and shared task hub counts change, for each design."""

from __future__ import annotations

from typing import Any

import numpy as np

from infnet.experiments import figures
from infnet.experiments.measure import latency_spread, peak_memory
from infnet.experiments.report import Report, fmt, fmt_mean_std
from infnet.experiments.suites.context import (
    INFNET,
    Context,
    by_label,
    failures,
    figure_path,
    flag_table,
    main_task,
    metric,
    run_table,
    spread,
    summary,
)
from infnet.models import build_model

# Sweeps: name -> (option, values, the design's options); v1 as the source document
# 4.4.2, v2 as the revised paper (n_c categorical hubs; n_s shared task hubs, whose v2
# default 4 is the middle of its range).
SWEEPS: dict[str, tuple[str, list[int], dict[str, Any]]] = {
    "v1 categorical proxies m": ("num_categorical_hubs", [1, 2, 4, 8, 16], {"preset": "v1"}),
    "v1 sequence proxies per behaviour k": (
        "sequence_hubs_per_behaviour",
        [1, 2, 4],
        {"preset": "v1"},
    ),
    "v1 shared task tokens N_s": ("num_shared_task_hubs", [1, 2, 3], {"preset": "v1"}),
    "v2 categorical hubs n_c": ("num_categorical_hubs", [4, 8, 16, 32, 64], {"preset": "v2"}),
    "v2 shared task hubs n_s": ("num_shared_task_hubs", [1, 2, 4, 8], {"preset": "v2"}),
}
# --quick: the ends and the default of each sweep
QUICK_SWEEPS: dict[str, list[int]] = {
    "v1 categorical proxies m": [1, 4, 16],
    "v1 sequence proxies per behaviour k": [1, 2],
    "v1 shared task tokens N_s": [1, 2],
    "v2 categorical hubs n_c": [4, 16, 64],
    "v2 shared task hubs n_s": [1, 4, 8],
}


def run(ctx: Context, report: Report) -> dict[str, Any]:
    import torch

    seq = ctx.schema.sequences
    sweeps = {
        name: (
            opt,
            [
                v
                for v in (QUICK_SWEEPS.get(name, values) if ctx.quick else values)
                if opt != "sequence_hubs_per_behaviour" or seq is None or v <= seq.max_len
            ],
            base,
        )
        for name, (opt, values, base) in SWEEPS.items()
    }

    def label(base: dict[str, Any], opt: str, v: int) -> str:
        return f"{base.get('preset', 'default')} {opt}={v}"

    specs = [
        ctx.spec(label(base, opt, v), INFNET, {**base, opt: v}, s)
        for _, (opt, values, base) in sweeps.items()
        for v in values
        for s in ctx.grid_seeds
    ]
    groups = by_label(ctx.runner.run_all(specs, "proxies"))
    batch = ctx.data.batch_at("test", np.arange(min(ctx.latency_batch, ctx.data.num_rows("test"))))
    main = main_task(ctx.schema)
    section = report.section("Hub counts (source document 4.4.2, paper Fig. 4)")
    section.text(
        f"One count varied at a time, the others at their defaults. Latency: median ms of one "
        f"inference batch of {len(batch.user)} test rows over {ctx.reps} repetitions, in process, "
        "on this machine's CPU. Peak memory: the most tensor memory live during that forward "
        "(a TorchDispatchMode counts every allocation; parameters and input excluded)."
    )
    results: dict[str, Any] = {}
    panels = []
    for name, (opt, values, base) in sweeps.items():
        rows, entries = [], []
        for v in values:
            rs = groups[label(base, opt, v)]
            torch.manual_seed(0)
            model = build_model(INFNET, ctx.schema, {**base, opt: v}).eval()
            ms, fastest, slowest = latency_spread(lambda m=model: m(batch), ctx.reps)
            mb = peak_memory(lambda m=model: m(batch)).total_peak / 2**20
            entry = {
                "option": opt,
                "value": v,
                "options": {**base, opt: v},
                "auc": summary([metric(r, f"{main}/auc") for r in rs]),
                "mtl_auc": summary([metric(r, "mtl_auc") for r in rs]),
                "latency_ms": ms,
                "latency_range_ms": [fastest, slowest],
                "peak_mb": mb,
                "parameters": model.num_parameters(),
                "run_dirs": [r.get("run_dir") for r in rs],
            }
            entries.append(entry)
            rows.append(
                [
                    str(v),
                    fmt_mean_std(entry["auc"]["mean"], entry["auc"]["std"]),
                    fmt_mean_std(entry["mtl_auc"]["mean"], entry["mtl_auc"]["std"]),
                    f"{fmt(ms, 1)} ({fmt(fastest, 1)}-{fmt(slowest, 1)})",
                    fmt(mb, 1),
                    f"{entry['parameters']:,}",
                ]
            )
        results[name] = entries
        section.table(
            [name, f"AUC ({main})", "MTL-AUC", "latency ms/batch (range)", "peak MB", "parameters"],
            rows,
            caption=f"Sweep of {name} (`{opt}`)",
        )
        panels.append(
            (
                name,
                values,
                [e["mtl_auc"]["mean"] for e in entries],
                [e["mtl_auc"]["std"] for e in entries],
                [e["latency_ms"] for e in entries],
                [e["latency_range_ms"] for e in entries],
                [e["peak_mb"] for e in entries],
            )
        )
    path = figures.sweep_panels(panels, figure_path(ctx, "proxies"))
    section.figure(
        path,
        f"MTL-AUC (top; {spread(len(ctx.grid_seeds))}), latency and peak memory (bottom) against "
        f"each hub count; latency: median of {ctx.reps} timings, bars from the fastest to the slowest",
    )
    all_records = [r for rs in groups.values() for r in rs]
    failures(section, all_records)
    flag_table(section, all_records)
    return {
        "main_task": main,
        "latency_batch": len(batch.user),
        "reps": ctx.reps,
        "sweeps": results,
        "runs": run_table(all_records),
    }
