"""`infnet demo` on a small world: the report's sections, figures that load in a browser,
and numbers that agree with their definitions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.helpers import browser_images

from infnet.data.loader import PreparedDataset
from infnet.demo import INFNET, MODELS, REFERENCE, demo
from infnet.experiments.runner import load_predictions
from infnet.metrics import auc


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    demo(out=out, rows=10_000, users=300, items=200, max_len=10, epochs=1, seed=0, workers=1)
    return out


def test_report_holds_settings_comparison_curves_attention_and_words(small_demo: Path) -> None:
    md = (small_demo / "report.md").read_text()
    titles = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert titles == [
        "Settings and evidence",
        "Test AUC per task against the oracle",
        "INFNet against the best baseline per task",
        "Training curves",
        "Cross attention (source document 4.6.1, paper Fig. 5)",
        "What this shows, and what it does not",
    ]
    assert "one seed (0); at most 1 epochs, batch 1024" in md
    assert "train 7,000, valid 1,500, test 1,500" in md
    assert "`preset=v2`" in md and "wide_heads=True" in md


def test_every_figure_loads_in_a_browser(small_demo: Path) -> None:
    images = browser_images(small_demo / "index.html")
    assert set(images) == {
        "demo_auc.png",
        "demo_curves.png",
        "attention_categorical.png",
        "attention_sequence.png",
    }
    assert all(images.values()), images


def test_numbers_agree_with_their_definitions(small_demo: Path) -> None:
    results = json.loads((small_demo / "results.json").read_text())["models"]
    assert list(results) == list(MODELS)
    data = PreparedDataset(small_demo / "data")
    oracle = data.stats["oracle_auc"]["test"]
    for label, r in results.items():
        for task, share in r["signal_share"].items():
            assert share == pytest.approx((r["test"][task]["auc"] - 0.5) / (oracle[task] - 0.5))
        steps = [step for step, _ in r["curve"]]
        assert steps == sorted(steps) and len(steps) >= 1, label
    # DeLong's AUCs are the test AUCs of the saved predictions, INFNet against the best baseline
    infnet = results[INFNET]
    for j, task in enumerate(data.schema.task_names):
        d = infnet["delong"][task]
        best = max(
            (m for m in results if m not in (INFNET, REFERENCE)),
            key=lambda m: results[m]["test"][task]["auc"],
        )
        assert d["best_baseline"] == best
        p = load_predictions(
            {"label": INFNET, "predictions": infnet["run_dir"] + "/test_predictions.npz"}
        )
        mask = p.label_mask[:, j]
        assert d["auc_a"] == pytest.approx(auc(p.labels[mask, j], p.outputs[mask, j]))
        assert d["auc_a"] == pytest.approx(infnet["test"][task]["auc"])
        assert 0.0 <= d["p"] <= 1.0 and np.isfinite(d["z"])
