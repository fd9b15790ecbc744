"""The attention suite (source document 4.6.1, paper Fig. 5): the final block's cross
attention of the real task tokens and the shared task tokens over the categorical and the
sequence tokens of a trained INFNet, averaged over a test sample.

Breadth of a channel (one query token): the entropy H = -sum_j a_j log a_j of its
attention over the real keys of a row, averaged over the rows that have at least two real
keys; normalised H / log(#real keys) lies in [0, 1] (1 = uniform). exp(H) is the
effective number of keys attended. The paper claims shared task channels are smooth and
broad and real task channels sharp: normalised entropy shared > task.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from infnet.experiments import figures
from infnet.experiments.report import Report, fmt
from infnet.experiments.runner import ok
from infnet.experiments.suites.context import INFNET, Context
from infnet.training.rundir import load_run

SAMPLE = 2048


def breadth(weights: torch.Tensor) -> dict[str, np.ndarray]:
    """weights [B, q, K] (rows sum to 1 over real keys, 0 on padding) -> per channel q:
    mean entropy (nats), mean normalised entropy, rows used."""
    w = weights.double()
    real = (w > 0).sum(
        -1
    )  # [B, q]; a real key with an exactly-0 weight cannot occur under a softmax
    h = -(w * torch.log(w.clamp_min(1e-300))).sum(-1)  # [B, q]
    use = real >= 2
    count = use.sum(0).clamp_min(1)
    norm = torch.where(use, h / torch.log(real.clamp_min(2).double()), 0.0)
    return {
        "entropy": (torch.where(use, h, 0.0).sum(0) / count).numpy(),
        "normalized": (norm.sum(0) / count).numpy(),
        "rows": use.sum(0).numpy(),
    }


def run(ctx: Context, report: Report) -> dict[str, Any]:
    section = report.section("Cross attention (source document 4.6.1, paper Fig. 5)")
    if ctx.infnet_run is not None:
        run_dir = ctx.infnet_run
    else:
        [record] = ctx.runner.run_all([ctx.spec(INFNET, INFNET, {}, ctx.seeds[0])], "attention")
        if not ok(record):
            raise RuntimeError(
                f"the attention suite needs a trained INFNet run and training one failed ({record.get('error')}); "
                "make one with `infnet train --model infnet --data PREPARED --out RUN` and pass --run RUN"
            )
        run_dir = record["run_dir"]
    config, model, data = load_run(run_dir, ctx.data)
    if config.model != INFNET:
        raise ValueError(
            f"{run_dir}: the attention suite needs an INFNet run, this one is {config.model!r}"
        )
    n = min(SAMPLE, data.num_rows("test"))
    maps = model.attention_maps(data.batch_at("test", np.arange(n)))
    schema = data.schema
    task_rows = [f"task: {t}" for t in schema.task_names]
    shared_rows = (
        [f"shared {i + 1}" for i in range(maps["shared/categorical"].shape[1])]
        if "shared/categorical" in maps
        else []
    )
    section.text(
        f"Run `{run_dir}`; mean attention (over heads) of the first {n} test rows, the final block. "
        "Rows: real task tokens, then shared task tokens. Breadth: entropy of each channel's "
        "attention over the real keys of a row, normalised by log(#real keys) (1 = uniform), "
        "averaged over rows with two or more real keys."
    )
    columns = {"categorical": schema.token_names}  # one label per token (a bag is one)
    if schema.sequences is not None:
        seq = schema.sequences
        columns["sequence"] = [
            f"{b}[{p - seq.max_len}]" for b in seq.behaviours for p in range(seq.max_len)
        ]
    results: dict[str, Any] = {"run_dir": str(run_dir), "sample": n, "maps": {}, "breadth": {}}
    stats_rows, summary = [], {}
    for keys, labels in columns.items():
        parts = [(task_rows, maps[f"task/{keys}"])] + (
            [(shared_rows, maps[f"shared/{keys}"])] if shared_rows else []
        )
        mean_rows, names = [], []
        for rows, w in parts:
            has = w.sum(-1) > 0  # [B, q]: rows with at least one real key
            mean_rows.append((w.sum(0) / has.sum(0).clamp_min(1).unsqueeze(-1)).numpy())
            b = breadth(w)
            for i, name in enumerate(rows):
                results["breadth"][f"{name} / {keys}"] = {k: float(v[i]) for k, v in b.items()}
                stats_rows.append(
                    [
                        name,
                        keys,
                        fmt(float(b["entropy"][i]), 3),
                        fmt(float(np.exp(b["entropy"][i])), 1),
                        fmt(float(b["normalized"][i]), 3),
                        str(int(b["rows"][i])),
                    ]
                )
            names += rows
            summary.setdefault(keys, {})["shared" if rows is shared_rows else "task"] = float(
                np.mean(b["normalized"])
            )
        matrix = np.concatenate(mean_rows)
        results["maps"][keys] = {"rows": names, "columns": labels, "mean": matrix}
        path = figures.heatmap(
            matrix,
            names,
            labels,
            f"final-block attention over {keys} tokens",
            ctx.out / f"attention_{keys}.png",
            annotate=False,
            xlabel=f"{keys} tokens"
            + (" (per behaviour, most recent last)" if keys == "sequence" else ""),
        )
        section.figure(
            path,
            f"Attention of task and shared task tokens over the {keys} tokens (brighter = more attention)",
        )
    section.table(
        ["channel", "keys", "entropy (nats)", "effective keys", "normalised entropy", "rows"],
        stats_rows,
        caption="Breadth of each channel's attention",
    )
    lines = []
    for keys, s in summary.items():
        if "shared" in s:
            diff = s["shared"] - s["task"]
            verdict = (
                "about as broad (within 0.005)"
                if abs(diff) < 0.005
                else ("broader" if diff > 0 else "narrower")
            )
            lines.append(
                f"- over {keys} tokens: shared channels {s['shared']:.3f}, real task channels {s['task']:.3f} (normalised entropy): shared attention is {verdict}"
            )
    if lines:
        section.text(
            "The paper's claim (shared task channels attend more broadly than real task channels):\n"
            + "\n".join(lines)
        )
    results["normalized_entropy"] = summary
    return results
