"""The experiment suites on the small simulated dataset: 1 epoch, 2 seeds, small grids."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from infnet.cli import app
from infnet.data.loader import PreparedDataset
from infnet.experiments import suites
from infnet.experiments.runner import Runner, load_predictions
from infnet.experiments.stats import delong, mean_std, paired_ttest
from infnet.experiments.suites.attention import breadth
from infnet.metrics import relative_improvement
from infnet.training import trainer as training

TRAIN = {"epochs": 1, "batch_size": 2048}
PNG = b"\x89PNG\r\n\x1a\n"


def small_grids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        suites.ablation,
        "ABLATIONS",
        {
            "v2": {
                "v2 full": {"preset": "v2"},
                "-task": {"preset": "v2", "use_task_tokens": False},
            },
            "v2 micro-ablations": {"fusion=sum": {"preset": "v2", "fusion": "sum"}},
        },
    )
    monkeypatch.setattr(
        suites.proxies,
        "SWEEPS",
        {"v2 categorical hubs n_c": ("num_categorical_hubs", [2, 4], {"preset": "v2"})},
    )
    monkeypatch.setattr(suites.proxies, "QUICK_SWEEPS", {})
    monkeypatch.setattr(
        suites.variants,
        "VARIANTS",
        {
            "INFNet v2": ("infnet", {"preset": "v2"}),
            "v2 + time-aware tokens": ("infnet", {"preset": "v2", "time_aware": True}),
            "DIN": ("din", {}),
        },
    )
    monkeypatch.setattr(suites.scaling, "QUICK_WIDTHS", [8])
    monkeypatch.setattr(suites.scaling, "QUICK_DEPTHS", [1, 2])


def context(data: PreparedDataset, out: Path, cache: Path, seeds: list[int]) -> suites.Context:
    return suites.Context(
        data=data,
        out=out,
        runner=Runner(data, cache, progress=False),
        seeds=seeds,
        models=["fm", "infnet", "din", "mean"],
        quick=True,
        train=TRAIN,
        latency_batch=256,
        reps=1,
    )


@pytest.fixture(scope="module")
def paper(
    small_prepared: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict, PreparedDataset]:
    mp = pytest.MonkeyPatch()
    small_grids(mp)
    try:
        out = tmp_path_factory.mktemp("paper")
        data = PreparedDataset(small_prepared)
        results = suites.run_suite("paper", context(data, out, out / "runs", [0, 1]))
    finally:
        mp.undo()
    return out, results, data


def strict_json(path: Path) -> dict:
    def refuse(name: str) -> None:
        raise AssertionError(f"{path} holds {name}; NaN must be written as null")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_every_suite_writes_a_complete_report(paper) -> None:
    out, _, _ = paper
    for folder in [out, *(out / name for name in suites.SUITES)]:
        strict_json(folder / "results.json")
        html = (folder / "index.html").read_text()
        markdown = (folder / "report.md").read_text()
        images = re.findall(r'<img src="([^"]+)"', html)
        assert images, folder
        assert images == re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
        for src in images:
            png = folder / src
            assert png.read_bytes()[:8] == PNG, png
            assert matplotlib.image.imread(png).ndim == 3
    # the combined report holds every suite's figures
    assert len(re.findall("<img ", (out / "index.html").read_text())) == sum(
        len(re.findall("<img ", (out / name / "index.html").read_text())) for name in suites.SUITES
    )


def test_relative_improvement_and_significance_follow_from_the_runs(paper) -> None:
    _, results, data = paper
    compare = results["compare"]
    runs = {(r["model"], r["seed"]): r for r in compare["runs"]}
    assert all(r["status"] in ("trained", "cached") for r in runs.values())
    ratios = [
        relative_improvement(runs["infnet", s]["test"]["mtl_auc"], runs["fm", s]["test"]["mtl_auc"])
        for s in (0, 1)
    ]
    rel = compare["overall"]["infnet"]["relative_improvement"]
    assert rel["mean"] == pytest.approx(np.mean(ratios))
    assert rel["std"] == pytest.approx(np.std(ratios, ddof=1))
    mtl = compare["overall"]["infnet"]["mtl_auc"]
    assert (mtl["mean"], mtl["std"]) == pytest.approx(
        mean_std([runs["infnet", s]["test"]["mtl_auc"] for s in (0, 1)])
    )

    assert [s["task"] for s in compare["significance"]] == data.schema.task_names
    for j, sig in enumerate(compare["significance"]):
        key, best = sig["metric"], sig["baseline"]
        means = {
            m: compare["per_task"][m][f"{sig['task']}/{key}"]["mean"] for m in ("fm", "din", "mean")
        }
        assert best == max(means, key=means.get)  # the best baseline of the task
        t, p = paired_ttest(
            *([runs[m, s]["test"][sig["task"]][key] for s in (0, 1)] for m in ("infnet", best))
        )
        assert (sig["t"], sig["p_ttest"]) == pytest.approx((t, p))
        a, b = (load_predictions(runs[m, 0]) for m in ("infnet", best))
        rows = a.label_mask[:, j]
        d = delong(a.labels[rows, j], a.outputs[rows, j], b.outputs[rows, j])
        assert sig["test_set_test"] == "DeLong"
        assert (sig["z"], sig["p_test_set"]) == pytest.approx((d["z"], d["p"]))
        # the saved predictions are the run's: their AUC is the recorded test AUC
        assert d["auc_a"] == pytest.approx(runs["infnet", 0]["test"][sig["task"]]["auc"])


def test_suite_numbers(paper) -> None:
    _, results, data = paper
    corr = results["correlation"]
    labels = np.array(corr["label_correlation"], dtype=float)
    assert np.allclose(np.diag(labels), 1.0) and np.allclose(labels, labels.T)
    ablation = results["ablation"]["tables"]
    assert ablation["v2"]["v2 full"]["relative_loss"]["values"] == [0.0]  # quick: first seed
    micro = ablation["v2 micro-ablations"]["fusion=sum"]  # against the v2 table's reference
    assert micro["relative_loss"]["values"] == pytest.approx(
        [micro["mtl_auc"]["values"][0] / ablation["v2"]["v2 full"]["mtl_auc"]["values"][0] - 1]
    )
    sweep = results["proxies"]["sweeps"]["v2 categorical hubs n_c"]
    assert [e["value"] for e in sweep] == [2, 4]
    assert all(e["latency_ms"] > 0 and e["peak_mb"] > 0 for e in sweep)
    lo_hi = [e["latency_range_ms"] for e in sweep]  # the spread the figure draws
    assert all(lo <= e["latency_ms"] <= hi for e, (lo, hi) in zip(sweep, lo_hi, strict=True))
    assert sweep[0]["parameters"] < sweep[1]["parameters"]  # H_C's MLP output grows with n_c
    variants = results["variants"]["variants"]
    din_auc = variants["DIN"]["is_click/auc"]["values"]
    against = variants["INFNet v2"]["against_din"]["is_click"]
    t, p = paired_ttest(variants["INFNet v2"]["is_click/auc"]["values"], din_auc)
    assert (against["t"], against["p_ttest"]) == pytest.approx((t, p), nan_ok=True)
    oracle = data.stats["oracle_auc"]["test"]["is_click"]
    assert variants["DIN"]["signal_share"]["is_click"] == pytest.approx(
        (np.mean(din_auc) - 0.5) / (oracle - 0.5)
    )
    scaling = results["scaling"]["models"]
    for model in ("infnet", "wukong"):
        flops = [e["flops_per_sample"] for e in scaling[model]]
        assert len(flops) == 2 and 0 < flops[0] < flops[1]  # one more block or layer costs more
    eff = results["efficiency"]
    assert {m["model"] for m in eff["models"]} == {"fm", "infnet", "din", "mean"}
    points = {(p["layer"], p["tokens"]): p for p in eff["scaling"]["points"]}
    # full attention's work grows as n^2, INFNet's and linear attention's as n: counted, so
    # that a loaded machine's timings cannot decide it (the ms are the benchmark's to show)
    flops = {key: p["flops_per_sample"] for key, p in points.items()}
    assert flops["full attention", 1024] / flops["full attention", 64] > 16 * 8
    for layer in ("INFNet", "linear attention"):
        assert 1 < flops[layer, 1024] / flops[layer, 64] <= 16
    assert all(p["ms"] > 0 for p in points.values())
    breakdown = eff["memory_breakdown_mb"]
    assert (
        breakdown["INFNet"]["embedding tables"] == breakdown["full attention"]["embedding tables"]
    )
    att = results["attention"]
    for entry in att["breadth"].values():
        assert 0.0 <= entry["normalized"] <= 1.0 + 1e-9
    assert set(att["maps"]) == {"categorical", "sequence"}
    assert len(att["maps"]["categorical"]["rows"]) == data.schema.num_tasks + 2  # v1: N_s = 2


def test_a_rerun_trains_nothing(paper, monkeypatch: pytest.MonkeyPatch) -> None:
    out, results, data = paper
    small_grids(monkeypatch)
    calls = []
    fit = training.Trainer.fit
    monkeypatch.setattr(training.Trainer, "fit", lambda self: calls.append(1) or fit(self))
    ctx = context(data, out / "again", out / "runs", [0, 1])
    again = suites.run_suite("ablation", ctx)
    assert calls == [] and ctx.runner.trained == 0
    full = ("tables", "v2", "v2 full", "mtl_auc", "values")

    def get(r: dict, keys: tuple) -> object:
        for k in keys:
            r = r[k]
        return r

    assert get(again["ablation"], full) == get(results["ablation"], full)
    assert {r["status"] for r in again["ablation"]["runs"]} == {"cached"}


def test_a_failing_run_is_recorded_and_the_suite_goes_on(
    paper, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _, data = paper
    monkeypatch.setattr(
        suites.ablation,
        "ABLATIONS",
        {
            "v2": {
                "v2 full": {"preset": "v2"},
                "bad option": {"num_categorical_hubs": 0},
                "bad build": {"preset": "v1", "sequence_hubs_per_behaviour": 99},
            }
        },
    )
    result = suites.run_suite("ablation", context(data, out / "failing", out / "runs", [0]))
    runs = {r["label"]: r for r in result["ablation"]["runs"]}
    assert runs["v2 full"]["status"] == "cached"
    assert (
        runs["bad option"]["status"] == "failed"
        and "num_categorical_hubs" in runs["bad option"]["error"]
    )
    assert runs["bad build"]["status"] == "failed" and "max_len" in runs["bad build"]["error"]
    assert (Path(runs["bad build"]["run_dir"]) / "error.txt").is_file()
    assert math.isfinite(result["ablation"]["tables"]["v2"]["v2 full"]["mtl_auc"]["mean"])
    saved = strict_json(out / "failing" / "results.json")
    assert saved["ablation"]["tables"]["v2"]["bad option"]["mtl_auc"]["mean"] is None
    report = (out / "failing" / "report.md").read_text()
    assert "Failed runs" in report and "bad build" in report


def test_unknown_suite_and_model_list_the_valid_ones(small_prepared: Path, tmp_path: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "300"})
    result = runner.invoke(
        app, ["experiment", "nope", "--data", str(small_prepared), "--out", str(tmp_path)]
    )
    assert result.exit_code != 0 and "compare, variants, correlation, ablation" in result.output
    result = runner.invoke(
        app,
        [
            "experiment",
            "compare",
            "--data",
            str(small_prepared),
            "--out",
            str(tmp_path),
            "--models",
            "fm,nope",
        ],
    )
    assert result.exit_code != 0 and "known models" in result.output and "infnet" in result.output
    with pytest.raises(ValueError, match="suites: compare"):
        suites.run_suite(
            "nope", context(PreparedDataset(small_prepared), tmp_path, tmp_path / "runs", [0])
        )


def test_breadth_of_known_distributions() -> None:
    w = torch.tensor([[[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]])
    b = breadth(w)
    assert b["normalized"] == pytest.approx([1.0, 0.0, 1.0])  # a one-key row is left out: 0
    assert b["entropy"] == pytest.approx([math.log(4), 0.0, math.log(2)])
    assert b["rows"].tolist() == [1, 0, 1]


def test_row_limit_trains_on_the_most_recent_rows(small_prepared: Path) -> None:
    from infnet.data.loader import RowLimit

    full, cut = PreparedDataset(small_prepared), RowLimit(small_prepared, {"train": 1000})
    n = full.num_rows("train")
    assert cut.num_rows("train") == 1000 and cut.num_rows("test") == full.num_rows("test")
    users = torch.cat([b.user for b in cut.batches("train", 300, shuffle=True, seed=3)])
    expected = full.batch_at("train", np.arange(n - 1000, n)).user
    assert sorted(users.tolist()) == sorted(expected.tolist())
    assert cut.fingerprint() != full.fingerprint()


def test_workers_train_the_same_runs_as_one_process(small_prepared: Path, tmp_path: Path) -> None:
    """Two worker processes: same metrics as the sequential runs of the fixture, duplicates
    trained once, a bad option recorded as failed, and the cache filled for a rerun."""
    from infnet.data.loader import RowLimit
    from infnet.experiments.runner import RunSpec

    data = RowLimit(small_prepared, {"train": 3000})
    specs = [
        RunSpec("fm", "fm", {}, TRAIN, 0),
        RunSpec("lr", "lr", {}, TRAIN, 0),
        RunSpec("fm again", "fm", {}, TRAIN, 0),
        RunSpec("bad", "infnet", {"num_categorical_hubs": 0}, TRAIN, 0),
    ]
    sequential = Runner(data, tmp_path / "one", progress=False).run_all(specs[:2])
    parallel = Runner(data, tmp_path / "two", progress=False, workers=2, threads=1)
    try:
        records = parallel.run_all(specs)
    finally:
        parallel.close()
    assert [r["status"] for r in records] == ["trained", "trained", "cached", "failed"]
    assert parallel.trained == 2 and "num_categorical_hubs" in records[3]["error"]
    for a, b in zip(sequential, records[:2], strict=True):
        # thread counts differ (reduction order), so equal up to float noise
        assert a["test"]["mtl_auc"] == pytest.approx(b["test"]["mtl_auc"], abs=1e-4)
    assert records[2]["label"] == "fm again" and records[2]["test"] == records[0]["test"]
    log = io.StringIO()  # not a terminal: one line a run instead of a live bar
    again = Runner(data, tmp_path / "two", console=Console(file=log), workers=2)
    assert [r["status"] for r in again.run_all(specs[:2], "zoo")] == ["cached", "cached"]
    assert again.trained == 0
    assert "zoo: 1/2 fm 'fm' seed 0: cached" in log.getvalue()


def test_compare_shows_the_lift_over_the_reference(paper) -> None:
    out, results, _ = paper
    compare = results["compare"]
    runs = {(r["model"], r["seed"]): r for r in compare["runs"]}
    lifts = [
        runs["infnet", s]["test"]["mtl_auc"] - runs["mean", s]["test"]["mtl_auc"] for s in (0, 1)
    ]
    lift = compare["overall"]["infnet"]["lift"]
    assert lift["mean"] == pytest.approx(np.mean(lifts))
    assert lift["std"] == pytest.approx(np.std(lifts, ddof=1))
    report = (out / "compare" / "report.md").read_text()
    assert "lift vs mean" in report and "the floor a model must beat" in report


def test_a_flagged_task_is_marked_in_the_comparison(flipped_prepared: Path, tmp_path: Path) -> None:
    data = PreparedDataset(flipped_prepared)
    ctx = context(data, tmp_path / "out", tmp_path / "runs", [0])
    ctx.models = ["shared_bottom", "mean"]
    results = suites.run_suite("compare", ctx)
    runs = {r["model"]: r for r in results["compare"]["runs"]}
    assert any(f.startswith("flipped: valid AUC") for f in runs["shared_bottom"]["flags"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| shared_bottom ⚠ |" in report
    assert "Runs with a flagged task" in report and "flipped: test AUC" in report


def test_a_run_in_two_processes_records_the_single_process_result(
    small_prepared: Path, tmp_path: Path
) -> None:
    """Runner(procs=2): one run trained by two DDP ranks, its record and test predictions
    those of the one-process run (RowLimit data included), and cached like any run."""
    from infnet.data.loader import RowLimit
    from infnet.experiments.runner import RunSpec

    data = RowLimit(small_prepared, {"train": 3000})
    spec = RunSpec("fm", "fm", {}, TRAIN, 0)
    one = Runner(data, tmp_path / "one", progress=False).run(spec)
    two = Runner(data, tmp_path / "two", progress=False, procs=2, threads=1).run(spec)
    assert two["status"] == "trained"
    assert two["test"]["mtl_auc"] == pytest.approx(one["test"]["mtl_auc"], abs=1e-4)
    np.testing.assert_allclose(
        load_predictions(two).outputs, load_predictions(one).outputs, rtol=1e-4, atol=1e-5
    )
    again = Runner(data, tmp_path / "two", progress=False, procs=2).run(spec)
    assert again["status"] == "cached"


def test_runs_in_the_runners_own_process_train_with_its_threads(
    small_prepared: Path, tmp_path: Path, monkeypatch
) -> None:
    """workers=1 trains in this process: with `threads`, as many torch threads as a worker's
    (an unset count let four concurrent compares on 2 cores run 2 GEMM threads each)."""
    import infnet.experiments.runner as runner_module
    from infnet.data.loader import RowLimit
    from infnet.experiments.runner import RunSpec

    seen = []
    train_run = runner_module.train_run

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return train_run(*args, **kwargs)

    monkeypatch.setattr(runner_module, "train_run", recording)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        data = RowLimit(small_prepared, {"train": 1000})
        Runner(data, tmp_path, progress=False, threads=1).run_all(
            [RunSpec("lr", "lr", {}, TRAIN, 0)]
        )
    finally:
        torch.set_num_threads(before)
    assert seen == [1]
