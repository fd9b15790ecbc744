"""PNG figures of the reports. matplotlib's object API with the Agg canvas: no display and
no global pyplot state, so figures can be drawn from any thread or test."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    return path


def heatmap(
    matrix: np.ndarray,
    rows: Sequence[str],
    cols: Sequence[str],
    title: str,
    path: Path,
    *,
    annotate: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    xlabel: str = "",
) -> Path:
    """A labelled matrix; NaN cells are left blank."""
    m = np.asarray(matrix, dtype=np.float64)
    width = min(14.0, 2.0 + 0.45 * max(len(cols), 4))
    fig = Figure(figsize=(width, 1.2 + 0.45 * max(len(rows), 3)))
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    fig.colorbar(im, ax=ax)
    ax.set_yticks(range(len(rows)), labels=list(rows))
    if len(cols) <= 40:
        ax.set_xticks(range(len(cols)), labels=list(cols), rotation=60, ha="right", fontsize=8)
    if annotate and m.size <= 100:
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                r, g, b, _ = im.cmap(im.norm(v))  # dark text on light cells, light on dark
                ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color=ink, fontsize=8)
    ax.set_title(title)
    if xlabel:
        ax.set_xlabel(xlabel)
    return _save(fig, path)


def lines(
    x: Sequence[float],
    series: dict[str, Sequence[float]],
    title: str,
    xlabel: str,
    ylabel: str,
    path: Path,
    *,
    log_x: bool = False,
    log_y: bool = False,
) -> Path:
    """One line per series over the same x; NaN points are skipped."""
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    for name, y in series.items():
        ax.plot(x, np.asarray(y, dtype=np.float64), marker="o", label=name)
    if log_x:
        ax.set_xscale("log", base=2)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def sweep_panels(
    panels: list[tuple[str, list, list[float], list[float], list[float], list, list[float]]],
    path: Path,
) -> Path:
    """Paper Fig. 4: per sweep (title, x, MTL-AUC mean, its std, latency ms, latency
    [fastest, slowest] ms, peak MB), the MTL-AUC on top, latency with its range and memory
    below. Error bars only where a std exists (two or more seeds)."""
    fig = Figure(figsize=(4.2 * len(panels), 6.5))
    axes = fig.subplots(2, len(panels), squeeze=False)
    for k, (title, x, auc, auc_std, ms, ms_range, mb) in enumerate(panels):
        top, bottom = axes[0][k], axes[1][k]
        std = np.asarray(auc_std, dtype=np.float64)
        top.errorbar(
            x,
            auc,
            yerr=np.nan_to_num(std) if np.isfinite(std).any() else None,
            marker="o",
            capsize=3,
        )
        top.set_title(title)
        top.set_ylabel("MTL-AUC")
        top.set_xticks(x)
        top.grid(alpha=0.3)
        lo_hi = np.asarray(ms_range, dtype=np.float64).reshape(len(ms), 2)
        med = np.asarray(ms, dtype=np.float64)
        bottom.errorbar(
            x,
            med,
            yerr=np.stack([med - lo_hi[:, 0], lo_hi[:, 1] - med]),
            marker="o",
            capsize=3,
            color="tab:orange",
            label="latency",
        )
        bottom.set_ylabel("ms per batch", color="tab:orange")
        bottom.set_xlabel(title)
        bottom.set_xticks(x)
        twin = bottom.twinx()
        twin.plot(x, mb, marker="s", color="tab:green", label="peak memory")
        twin.set_ylabel("peak MB", color="tab:green")
        bottom.grid(alpha=0.3)
    return _save(fig, path)


def scatter(
    x: Sequence[float],
    y: Sequence[float],
    labels: Sequence[str],
    title: str,
    xlabel: str,
    ylabel: str,
    path: Path,
    *,
    highlight: str | None = None,
    log_x: bool = True,
) -> Path:
    """Labelled points (paper Fig. 6); `highlight` is drawn in red."""
    fig = Figure(figsize=(7.0, 5.0))
    ax = fig.subplots()
    for xi, yi, name in zip(x, y, labels, strict=True):
        color = "tab:red" if name == highlight else "tab:blue"
        ax.scatter([xi], [yi], color=color, s=40)
    if log_x:
        ax.set_xscale("log")
    _place_labels(fig, ax, x, y, labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _place_labels(
    fig: Figure, ax, x: Sequence[float], y: Sequence[float], labels: Sequence[str]
) -> None:
    """Point labels that do not overlap: each label goes right of its point and, while its
    box (estimated from the font size) meets one already placed, one line higher, with a
    leader line back to the point."""
    FigureCanvasAgg(fig)
    ax.autoscale_view()
    pts = ax.transData.transform(np.column_stack([x, y]).astype(np.float64))  # pixels
    scale = fig.dpi / 72.0  # pixels per point
    line, char = 10.0 * scale, 4.8 * scale  # a fontsize-8 line and character
    placed: list[tuple[float, float, float, float]] = []
    for k in np.argsort(pts[:, 1], kind="stable"):
        name = labels[k]
        x0, y0 = pts[k, 0] + 4 * scale, pts[k, 1] + 4 * scale
        w = char * len(name)
        lift = 0
        while lift < 12 and any(
            x0 < bx + bw
            and bx < x0 + w
            and y0 + lift * line < by + line
            and by < y0 + (lift + 1) * line
            for bx, by, bw, _ in placed
        ):
            lift += 1
        placed.append((x0, y0 + lift * line, w, line))
        ax.annotate(
            name,
            (x[k], y[k]),
            textcoords="offset points",
            xytext=(4, 4 + lift * line / scale),
            fontsize=8,
            arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5"} if lift else None,
        )


def bars(
    labels: Sequence[str],
    values: Sequence[float],
    errors: Sequence[float] | None,
    title: str,
    ylabel: str,
    path: Path,
    *,
    groups: dict[str, Sequence[float]] | None = None,
    base: float | None = None,
) -> Path:
    """Bars, highest first; error bars only where an error is finite (a std needs two or
    more seeds, so one seed draws none). With `groups` ({name: values}), grouped bars per
    label in the given order. `base`: where the value axis starts (default 0; 0.5 for an AUC:
    chance), so a bar's height is its distance from that baseline; the caption says so."""
    fig = Figure(figsize=(max(6.0, 0.9 * len(labels) + 2), 4.2))
    ax = fig.subplots()
    x = np.arange(len(labels))
    if groups:
        width = 0.8 / len(groups)
        for k, (name, v) in enumerate(groups.items()):
            v = np.asarray(v, dtype=np.float64)
            bottom = 0.0 if base is None else base
            ax.bar(
                x + (k - (len(groups) - 1) / 2) * width,
                v - bottom,
                width,
                bottom=bottom,
                label=name,
            )
        ax.legend(fontsize=8)
        finite = np.concatenate([np.asarray(v, dtype=np.float64) for v in groups.values()])
    else:
        v = np.asarray(values, dtype=np.float64)
        order = np.argsort(np.where(np.isfinite(v), -v, np.inf), kind="stable")
        labels, v = [labels[i] for i in order], v[order]
        err = None
        if errors is not None:
            e = np.asarray(errors, dtype=np.float64)[order]
            err = np.where(np.isfinite(e), e, 0.0) if np.isfinite(e).any() else None
        bottom = 0.0 if base is None else base
        ax.bar(
            x,
            v - bottom,
            bottom=bottom,
            yerr=err,
            capsize=3 if err is not None else 0,
            color="tab:blue",
        )
        finite = v
    finite = finite[np.isfinite(finite)]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        pad = max(hi - lo, 1e-3) * 0.15
        ax.set_ylim(base if base is not None else min(0.0, lo - pad), hi + pad)
    if base is not None:
        ax.axhline(base, color="k", lw=0.8)
    ax.set_xticks(x, labels=list(labels), rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def training_curves(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    path: Path,
) -> Path:
    """One line per name over its own x (e.g. validation score against optimiser step)."""
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    for name, (x, y) in series.items():
        ax.plot(x, np.asarray(y, dtype=np.float64), marker="o", ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def curves(
    series: dict[str, tuple[Sequence[float], Sequence[float], Sequence[str]]],
    title: str,
    xlabel: str,
    ylabel: str,
    path: Path,
) -> Path:
    """One labelled point series per name, (x, y, point labels), x on a log scale; each
    series' points are joined in x order. NaN points are skipped."""
    fig = Figure(figsize=(7.0, 5.0))
    ax = fig.subplots()
    for name, (x, y, labels) in series.items():
        order = np.argsort(np.asarray(x, dtype=np.float64))
        xs = np.asarray(x, dtype=np.float64)[order]
        ys = np.asarray(y, dtype=np.float64)[order]
        ax.plot(xs, ys, marker="o", label=name)
        for i in order:
            if np.isfinite(y[i]):
                ax.annotate(
                    labels[i], (x[i], y[i]), textcoords="offset points", xytext=(3, 3), fontsize=7
                )
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def bands(
    x: Sequence[float],
    panels: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    path: Path,
) -> Path:
    """One panel per series: (value, low, high, reference) over x; the interval as a band,
    the reference dashed, zero as a thin line."""
    n = len(panels)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    for ax, (name, (value, low, high, reference)) in zip(axes, panels.items(), strict=False):
        ax.fill_between(x, np.asarray(low, float), np.asarray(high, float), alpha=0.25,
                        label="95% interval")  # fmt: skip
        ax.plot(x, np.asarray(value, float), marker="o", markersize=3, label="measured")
        ax.plot(x, np.asarray(reference, float), linestyle="--", color="black", label="truth")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    for ax in axes[n:]:
        ax.set_visible(False)
    return _save(fig, path)
