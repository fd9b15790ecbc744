"""Report rendering: Markdown and HTML from the same blocks, results.json with NaN as null."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.text import Text
from tests.helpers import browser_images

from infnet.experiments import figures
from infnet.experiments.measure import latency_ms, peak_memory
from infnet.experiments.report import Report, fmt_mean_std, fmt_pct, jsonable


def test_report_renders_tables_figures_and_nan_as_null(tmp_path: Path) -> None:
    out = tmp_path / "report"
    png = figures.heatmap(
        np.array([[1.0, np.nan], [0.5, 1.0]]), ["a", "b"], ["a", "b"], "m", out / "fig" / "m.png"
    )
    report = Report("title <x>")
    section = report.section("Results")
    section.text("First `code` and **bold**.\n\n- one\n- two")
    section.table(
        ["model", "AUC"],
        [["fm", fmt_mean_std(0.71234, 0.01)], ["lr", fmt_mean_std(float("nan"), None)]],
        caption="T",
    )
    section.figure(png, "a heatmap")
    report.write(
        out, {"auc": float("nan"), "values": np.array([1.0, np.inf]), "n": np.int64(3), "path": out}
    )

    results = json.loads((out / "results.json").read_text())
    assert results == {"auc": None, "values": [1.0, None], "n": 3, "path": str(out)}
    md = (out / "report.md").read_text()
    assert "| fm | 0.7123 ± 0.0100 |" in md and "| lr | - |" in md
    assert "![a heatmap](fig/m.png)" in md
    html = (out / "index.html").read_text()
    assert "<title>title &lt;x&gt;</title>" in html
    assert "<code>code</code>" in html and "<b>bold</b>" in html and "<li>two</li>" in html
    assert '<img src="fig/m.png"' in html and "<td>0.7123 ± 0.0100</td>" in html
    assert matplotlib.image.imread(out / "fig" / "m.png").shape[2] == 4


def test_formatting_and_jsonable() -> None:
    assert fmt_pct(0.0123, 0.004) == "+1.23% ± 0.40"
    assert fmt_pct(float("nan")) == "-"
    assert fmt_mean_std(0.5, float("nan")) == "0.5000"
    assert jsonable({"a": (np.float32(0.5), float("-inf"))}) == {"a": [0.5, None]}


def test_peak_memory_counts_live_tensors() -> None:
    def f() -> torch.Tensor:
        x = torch.ones(1000, 250)  # 1 MB
        y = x * 2  # 2 MB live
        del y
        z = x + 1  # 2 MB live again, never 3
        return z.softmax(-1)  # 3 MB, the softmax output classed as attention weights

    mem = peak_memory(f)
    assert mem.total_peak == 3 * 1_000_000
    assert mem.peak["attention weights"] == 1_000_000
    assert mem.total_live == 0  # all freed once the result is dropped
    assert latency_ms(lambda: torch.ones(10).sum(), reps=3) > 0


def test_index_html_images_load_in_a_browser(tmp_path: Path) -> None:
    out = tmp_path / "report"
    report = Report("browser")
    section = report.section("Figures")
    section.figure(figures.heatmap(np.eye(2), ["a", "b"], ["a", "b"], "m", out / "m.png"), "ok")
    gone = figures.heatmap(np.eye(2), ["a", "b"], ["a", "b"], "m", out / "gone.png")
    section.figure(gone, "deleted after writing")
    report.write(out, {})
    gone.unlink()
    assert browser_images(out / "index.html") == {"m.png": True, "gone.png": False}


def _drawn_axes(monkeypatch: pytest.MonkeyPatch) -> list:
    """The axes of every figure saved from now on (checked after drawing)."""
    axes: list = []
    real = Figure.savefig

    def keep(fig: Figure, *args, **kwargs):
        axes.append(fig.axes[0])
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return axes


def test_bars_highest_first_from_a_stated_base_and_no_error_bars_from_one_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    axes = _drawn_axes(monkeypatch)
    labels, values = ["b", "a", "c"], [0.7, 0.8, float("nan")]
    figures.bars(labels, values, [float("nan")] * 3, "t", "AUC", tmp_path / "1.png", base=0.5)
    figures.bars(labels, values, [0.01, 0.02, float("nan")], "t", "AUC", tmp_path / "2.png")
    one, two = axes
    assert [t.get_text() for t in one.get_xticklabels()] == ["a", "b", "c"]
    assert one.get_ylim()[0] == 0.5
    tops = [p.get_y() + p.get_height() for p in one.patches]
    assert tops[:2] == pytest.approx([0.8, 0.7])

    def has_error_bars(ax) -> bool:
        return any(isinstance(c, ErrorbarContainer) for c in ax.containers)

    assert not has_error_bars(one)  # one seed: no error bars at all
    assert has_error_bars(two) and two.get_ylim()[0] == 0.0


def test_heatmap_annotations_contrast_with_their_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    axes = _drawn_axes(monkeypatch)
    figures.heatmap(np.array([[0.0, 1.0]]), ["r"], ["dark", "light"], "m", tmp_path / "h.png")
    colors = {t.get_text(): t.get_color() for t in axes[0].texts}
    assert colors == {"0.00": "white", "1.00": "black"}  # viridis: dark purple, light yellow


def test_scatter_labels_of_coinciding_points_do_not_overlap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    axes = _drawn_axes(monkeypatch)
    figures.scatter(
        [10, 10, 11], [0.7, 0.7, 0.7001], ["aaa", "bbb", "ccc"], "s", "x", "y", tmp_path / "s.png"
    )
    ax = axes[0]
    renderer = ax.figure.canvas.get_renderer()
    boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # the text, not its leader
    assert len(boxes) == 3
    for i in range(3):
        for j in range(i + 1, 3):
            assert not boxes[i].overlaps(boxes[j]), (ax.texts[i].get_text(), ax.texts[j].get_text())
