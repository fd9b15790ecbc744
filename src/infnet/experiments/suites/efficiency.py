"""The efficiency suite (source document 4.5, paper Fig. 6): nothing here trains.

1. Parameters and inference latency of every model (default options, one test batch).
2. Scaling with the number of tokens n (4.5.1): one attention layer of each kind over the
   same tokens X [B, n, d], time and peak tensor memory as n grows:
     full attention    softmax(Q K^T / sqrt(d_k)) V over all n tokens, O(n^2 d): the layer
                       INFNet's use_hubs=false runs (layers.CrossAttention);
     linear attention  phi(Q) (phi(K)^T V) / (phi(Q) phi(K)^T 1), phi = elu + 1
                       (Katharopoulos et al. 2020), O(n d^2): `LinearAttention` below;
     INFNet            P = n_c + F n_s + N_task + N_s hubs (v2 defaults) attend over the n
                       tokens, then a gated broadcast unit updates all n tokens, O(P n d):
                       `HubBlock`.
3. Memory breakdown (4.5.2) of INFNet against its full-attention variant on one test
   batch: embedding tables, other parameters, and the peak tensor memory of the forward by
   class (embeddings looked up, attention weights, other activations; measure.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from infnet.experiments import figures
from infnet.experiments.measure import counted_flops, latency_ms, parameter_bytes, peak_memory
from infnet.experiments.report import Report, fmt
from infnet.experiments.suites.context import Context
from infnet.models import available_models, build_model, model_class
from infnet.models.infnet_config import INFNetConfig
from infnet.models.layers.attention import CrossAttention
from infnet.models.layers.bgu import BGU

MB = 2**20


class LinearAttention(nn.Module):
    """Multi-head linear attention with the elu + 1 feature map; padded keys are dropped
    from both sums, so a padded key changes nothing."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.h, self.dk = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, n, d = x.shape
        q, k, v = self.qkv(x).view(B, n, 3, self.h, self.dk).unbind(2)  # [B, n, H, dk] each
        q, k = nn.functional.elu(q) + 1, nn.functional.elu(k) + 1
        if mask is not None:
            k = k * mask.view(B, n, 1, 1).to(k.dtype)
        kv = torch.einsum("bnhe,bnhf->bhef", k, v)  # [B, H, dk, dk]: O(n d^2)
        norm = torch.einsum("bnhe,bhe->bnh", q, k.sum(1)).clamp_min(1e-6)  # phi(q) . sum phi(k)
        out = torch.einsum("bnhe,bhef->bnhf", q, kv) / norm.unsqueeze(-1)
        return self.out(out.reshape(B, n, d))


class HubBlock(nn.Module):
    """INFNet v2's cost structure on one token set: P hubs aggregate X by cross attention,
    then a gated broadcast unit updates every token of X from them."""

    def __init__(self, dim: int, num_heads: int, num_queries: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.1)
        self.attn = CrossAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim)
        self.bgu = BGU(num_queries, dim, [32])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.queries.expand(x.shape[0], -1, -1)
        q = self.norm(q + self.attn(q, x, mask)[0])
        return self.bgu(x, q)


class FullAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.attn = CrossAttention(dim, num_heads)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.attn(x, x, mask, folded=False)[0]


def scaling(
    lengths: list[int], dim: int, heads: int, queries: int, batch: int, reps: int
) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    layers = {
        "full attention": FullAttention(dim, heads),
        "linear attention": LinearAttention(dim, heads),
        "INFNet": HubBlock(dim, heads, queries),
    }
    out = []
    for n in lengths:
        x = torch.randn(batch, n, dim)
        mask = torch.ones(batch, n, dtype=torch.bool)
        mask[:, : n // 4] = False  # a quarter of padding, as left-padded histories have
        for name, layer in layers.items():
            layer.eval()
            ms = latency_ms(lambda layer=layer, x=x, mask=mask: layer(x, mask), reps)
            mem = peak_memory(lambda layer=layer, x=x, mask=mask: layer(x, mask))
            flops = counted_flops(lambda layer=layer, x=x, mask=mask: layer(x, mask))
            out.append(
                {
                    "layer": name,
                    "tokens": n,
                    "ms": ms,
                    "flops_per_sample": flops / batch,
                    "peak_mb": mem.total_peak / MB,
                    "attention_mb": mem.peak.get("attention weights", 0) / MB,
                }
            )
    return out


def _model_costs(
    ctx: Context, models: list[str], batch: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, failed = [], []
    for name in models:
        try:
            torch.manual_seed(0)
            model = build_model(name, ctx.schema, {}).eval()
            rows.append(
                {
                    "model": name,
                    "parameters": model.num_parameters(),
                    "ms": latency_ms(lambda m=model: m(batch), ctx.reps),
                }
            )
        except Exception as err:  # recorded, the others go on
            failed.append({"model": name, "error": f"{type(err).__name__}: {err}"})
    return rows, failed


def _breakdown(ctx: Context, batch: Any) -> dict[str, dict[str, float]]:
    out = {}
    for label, options in (("full attention", {"use_hubs": False}), ("INFNet", {})):
        torch.manual_seed(0)
        model = build_model("infnet", ctx.schema, options).eval()
        mem = peak_memory(lambda m=model: m(batch))
        params = parameter_bytes(model)
        out[label] = {
            "embedding tables": params["embedding tables"] / MB,
            "embeddings (looked up)": mem.peak.get("embeddings", 0) / MB,
            "attention weights": mem.peak.get("attention weights", 0) / MB,
            "activations": mem.peak.get("activations", 0) / MB,
            "parameters": params["parameters"] / MB,
            "forward peak": mem.total_peak / MB,
        }
        out[label]["total (tables + parameters + forward peak)"] = (
            out[label]["embedding tables"] + out[label]["parameters"] + out[label]["forward peak"]
        )
    return out


def run(ctx: Context, report: Report) -> dict[str, Any]:
    models = ctx.models or available_models()
    for m in models:
        model_class(m)
    batch = ctx.data.batch_at("test", np.arange(min(ctx.latency_batch, ctx.data.num_rows("test"))))
    section = report.section("Efficiency (source document 4.5, paper Fig. 6)")
    costs, failed = _model_costs(ctx, models, batch)
    section.text(
        f"Inference: median ms of one batch of {len(batch.user)} test rows over {ctx.reps} repetitions after a warm-up, in process on CPU ({torch.get_num_threads()} threads), default options of each model."
    )
    section.table(
        ["model", "parameters", "ms / batch"],
        [[c["model"], f"{c['parameters']:,}", fmt(c["ms"], 1)] for c in costs],
        caption="Parameters and inference time",
    )
    if failed:
        section.table(
            ["model", "error"],
            [[f["model"], f["error"]] for f in failed],
            caption="Models that could not be measured",
        )
    path = figures.scatter(
        [c["parameters"] for c in costs],
        [c["ms"] for c in costs],
        [c["model"] for c in costs],
        "Inference time against parameters",
        "parameters",
        "ms per batch",
        ctx.out / "efficiency_params_latency.png",
        highlight="infnet",
    )
    section.figure(path, "Inference time and parameters of every model (paper Fig. 6)")

    # 4.5.1: scaling with the number of tokens
    cfg, schema = INFNetConfig(preset="v2"), ctx.schema  # the layer HubBlock measures
    queries = (
        cfg.num_categorical_hubs
        + schema.num_behaviours * cfg.sequence_hubs_per_behaviour
        + cfg.num_shared_task_hubs
        + schema.num_tasks
    )
    lengths = [64, 256, 1024] if ctx.quick else [64, 128, 256, 512, 1024, 2048, 4096]
    scale_batch, d = 8, cfg.embedding_dim
    points = scaling(lengths, d, cfg.num_heads, queries, scale_batch, 3)
    table = {(p["layer"], p["tokens"]): p for p in points}
    layers = ["full attention", "linear attention", "INFNet"]
    section.text(
        f"Scaling (4.5.1): one layer of each kind over the same n tokens (batch {scale_batch}, d = {d}, "
        f"{cfg.num_heads} heads, a quarter of the tokens padding); INFNet's layer is {queries} queries "
        f"(preset {cfg.preset}: n_c = {cfg.num_categorical_hubs}, F x n_s = {schema.num_behaviours * cfg.sequence_hubs_per_behaviour}, "
        f"N_s = {cfg.num_shared_task_hubs}, N_task = {schema.num_tasks}) over the n tokens plus the broadcast unit. "
        "Operation counts: full n^2 d, linear n d^2, INFNet P n d; the MFLOP columns are counted per "
        "sample (torch.utils.flop_counter, matrix products). Full attention runs torch's fused "
        "scaled-dot-product kernel, which does not keep the n x n weights, so its memory grows slower than n^2."
    )
    rows = []
    for n in lengths:
        f, li, inf = (table[(name, n)] for name in layers)
        rows.append(
            [
                str(n),
                fmt(f["flops_per_sample"] / 1e6, 2),
                fmt(li["flops_per_sample"] / 1e6, 2),
                fmt(inf["flops_per_sample"] / 1e6, 2),
                fmt(f["ms"], 2),
                fmt(li["ms"], 2),
                fmt(inf["ms"], 2),
                fmt(f["ms"] / inf["ms"], 1) + "x",
                fmt(li["ms"] / inf["ms"], 1) + "x",
                fmt(f["peak_mb"], 2),
                fmt(li["peak_mb"], 2),
                fmt(inf["peak_mb"], 2),
            ]
        )
    section.table(
        [
            "n",
            "MFLOP full",
            "MFLOP linear",
            "MFLOP INFNet",
            "ms full",
            "ms linear",
            "ms INFNet",
            "full / INFNet",
            "linear / INFNet",
            "MB full",
            "MB linear",
            "MB INFNet",
        ],
        rows,
        caption="Time and peak memory against the number of tokens (table 4.5.1)",
    )
    for key, ylabel, name in (("ms", "ms per batch", "time"), ("peak_mb", "peak MB", "memory")):
        series = {layer: [table[(layer, n)][key] for n in lengths] for layer in layers}
        path = figures.lines(
            lengths,
            series,
            f"{name} against the number of tokens",
            "tokens n",
            ylabel,
            ctx.out / f"efficiency_scaling_{name}.png",
            log_x=True,
            log_y=True,
        )
        section.figure(path, f"Inference {name} of full, linear and INFNet attention against n")

    # 4.5.2: memory breakdown
    breakdown = _breakdown(ctx, batch)
    parts = list(breakdown["INFNet"])
    section.table(
        ["component (MB)", "full attention", "INFNet", "saving"],
        [
            [
                p,
                fmt(breakdown["full attention"][p], 3),
                fmt(breakdown["INFNet"][p], 3),
                _saving(breakdown["full attention"][p], breakdown["INFNet"][p]),
            ]
            for p in parts
        ],
        caption=f"Memory breakdown on one batch of {len(batch.user)} test rows (table 4.5.2)",
    )
    section.text(
        "Memory breakdown: embedding tables and parameters are the models' weights; the other rows are peak "
        "tensor memory during the forward by the op that allocated it (embedding lookups, softmax / attention "
        "kernels, everything else), counted by a TorchDispatchMode (experiments/measure.py)."
    )
    path = figures.bars(
        parts,
        [],
        None,
        "Memory breakdown (MB)",
        "MB",
        ctx.out / "efficiency_memory.png",
        groups={k: [v[p] for p in parts] for k, v in breakdown.items()},
    )
    section.figure(path, "Memory of INFNet against its full-attention variant")
    return {
        "latency_batch": len(batch.user),
        "reps": ctx.reps,
        "threads": torch.get_num_threads(),
        "models": costs,
        "failed": failed,
        "scaling": {"batch": scale_batch, "dim": d, "queries": queries, "points": points},
        "memory_breakdown_mb": breakdown,
    }


def _saving(full: float, ours: float) -> str:
    return "-" if full == 0 or not math.isfinite(full) else f"{100 * (ours / full - 1):+.1f}%"
