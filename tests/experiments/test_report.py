"""Report rendering: Markdown and HTML from the same blocks, results.json with NaN as null."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import torch

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
