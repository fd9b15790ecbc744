"""`infnet experiment tune` and `compare --tuned` on the small simulated dataset: a study
finishes, resumes after an interruption without repeating a finished trial, prunes a
hopeless trial, records a failing one, and its outcome is what compare trains."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from infnet.cli import app
from infnet.data.loader import PreparedDataset
from infnet.experiments.runner import Runner
from infnet.experiments.space import (
    DEFAULT_SPACE,
    Choice,
    Range,
    Space,
    Variant,
    check_space,
    defaults,
    load_space,
)
from infnet.experiments.tune import Budget, Reporter, open_study, storage_url, tune

SPACE = {"lr": {"low": 1e-3, "high": 1e-2, "log": True}, "embedding_dim": {"choices": [4, 8]}}


def _cli(*args: str):
    return CliRunner(env={"COLUMNS": "300"}).invoke(app, list(args))


def _tune(data: Path, out: Path, space: Path, trials: int):
    return _cli(
        "experiment", "tune", "--data", str(data), "--out", str(out), "--models", "fm",
        "--trials", str(trials), "--space", str(space), "--epochs", "1",
        "--set", "batch_size=1024", "--no-progress",
    )  # fmt: skip


def test_a_study_resumes_without_repeating_a_trial_and_compare_trains_its_best(
    small_prepared: Path, tmp_path: Path
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    out = tmp_path / "tune"
    result = _tune(small_prepared, out, space, 2)
    assert result.exit_code == 0, result.output
    first = json.loads((out / "tuned.json").read_text())["models"]["fm"]
    # the first trial always finishes (the pruner waits for one); the second may be pruned
    assert [t["state"] for t in first["trials"]][0] == "COMPLETE"
    assert first["trials"][1]["state"] in ("COMPLETE", "PRUNED")
    # the first is the model's defaults: lr 1e-3; embedding_dim 16 is no choice, so drawn
    assert [t["default"] for t in first["trials"]] == [True, False]
    assert first["trials"][0]["params"]["lr"] == 1e-3
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 2

    # an interruption: a third trial asked and left running, as a killed tune leaves it
    study = optuna.load_study(study_name="fm", storage=storage_url(out))
    cut = study.ask()
    cut.suggest_float("lr", 1e-3, 1e-2, log=True)
    cut.suggest_categorical("embedding_dim", [4, 8])

    result = _tune(small_prepared, out, space, 3)
    assert result.exit_code == 0, result.output
    trials = json.loads((out / "tuned.json").read_text())["models"]["fm"]["trials"]
    assert trials[:2] == first["trials"]  # the finished trials, untouched
    assert trials[2]["state"] == "FAIL" and trials[2]["interrupted"]
    # asked again with the cut trial's parameters; finished, or pruned against the median
    # of the first two (which one depends on the CPU's float rounding)
    assert trials[3]["state"] in ("COMPLETE", "PRUNED") and trials[3]["params"] == cut.params
    assert len(sorted((out / "runs").iterdir())) == 3  # one run trained, none repeated
    assert _tune(small_prepared, out, space, 3).exit_code == 0
    assert len(sorted((out / "runs").iterdir())) == 3

    best = json.loads((out / "tuned.json").read_text())["models"]["fm"]["best"]
    assert best["value"] == max(t["value"] for t in trials if t["state"] == "COMPLETE")
    report = tmp_path / "compare"
    result = _cli(
        "experiment", "compare", "--data", str(small_prepared), "--out", str(report),
        "--tuned", str(out), "--seeds", "2", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    runs = json.loads((report / "results.json").read_text())["compare"]["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    for r in runs:
        assert r["config"]["model_options"]["embedding_dim"] == best["options"]["embedding_dim"]
        assert r["config"]["train"]["lr"] == pytest.approx(best["train"]["lr"])
        assert r["config"]["train"]["epochs"] == 1
    text = (report / "report.md").read_text()
    assert "Budget spent and best configuration per model" in text
    # the evidence states the runs' budget, not the base config's (batch 1024 here)
    assert "best configuration of the tune" in text and "at most 1 epoch(s)" in text
    assert "batch 1024" not in text
    assert "each trial's sampled configuration" in (out / "report.md").read_text()
    assert (report / "tuning_history.png").is_file()


@pytest.fixture
def runner(small_prepared: Path, tmp_path: Path) -> Runner:
    return Runner(PreparedDataset(small_prepared), tmp_path / "runs", progress=False)


def test_a_failing_trial_is_recorded_and_the_study_goes_on(runner: Runner, tmp_path: Path) -> None:
    # 3 heads do not divide d = 16: every trial fails at its config, with the reason kept
    space = Space(
        params={"lr": Range(low=1e-3, high=2e-3)},
        models={"infnet": {"num_heads": Choice(choices=[3])}},
    )
    outcome = tune(runner, ["infnet"], space, Budget(trials=2, epochs=1), tmp_path)
    trials = outcome["models"]["infnet"]["trials"]
    assert [t["state"] for t in trials] == ["FAIL", "FAIL"]
    assert all("divisible" in t["error"] for t in trials)
    assert outcome["models"]["infnet"]["best"] is None


def test_a_variant_is_a_study_of_its_own_with_its_fixed_options(
    runner: Runner, tmp_path: Path
) -> None:
    space = Space(
        params={"lr": Range(low=1e-3, high=1e-2, log=True)},
        variants={"fm_wide": Variant(model="fm", options={"embedding_dim": 12})},
    )
    check_space(space, ["fm", "fm_wide"])
    with pytest.raises(KeyError, match="unknown model 'fm_narrow'.*variants: fm_wide"):
        check_space(space, ["fm_narrow"])
    outcome = tune(runner, ["fm", "fm_wide"], space, Budget(trials=1, epochs=1), tmp_path)
    wide = outcome["models"]["fm_wide"]
    assert wide["model"] == "fm" and wide["best"]["options"]["embedding_dim"] == 12
    assert "embedding_dim" not in outcome["models"]["fm"]["best"]["options"]
    runs = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/result.json")]
    assert sorted(r["config"]["model_options"]["embedding_dim"] for r in runs) == [12, 16]


def test_the_defaults_are_a_point_of_the_space() -> None:
    common = {"lr": 1e-3, "embedding_dim": 16, "dropout": 0.0, "batch_size": 4096}
    # embedding_l2's default 0 lies below the log range: its low bound, 1e-8
    assert defaults(DEFAULT_SPACE, "mmoe") == {**common, "embedding_l2": 1e-8, "num_experts": 8}
    assert defaults(DEFAULT_SPACE, "infnet")["num_blocks"] == 2
    assert defaults(DEFAULT_SPACE, "infnet_v2")["num_blocks"] == 2
    narrow = Space(params={"embedding_dim": Choice(choices=[4, 8])})
    assert defaults(narrow, "fm") == {}  # no choice holds the default: the sampler's


def test_a_study_begun_without_the_defaults_gets_them_next(runner: Runner, tmp_path: Path) -> None:
    space = Space(params={"lr": Range(low=1e-3, high=1e-2, log=True)})
    study = open_study(tmp_path, "fm", seed=0, budget=Budget(trials=2))
    older = study.ask()
    older.suggest_float("lr", 1e-3, 1e-2, log=True)
    study.tell(older, 0.6)
    trials = tune(runner, ["fm"], space, Budget(trials=2, epochs=1), tmp_path)["models"]["fm"]
    assert [t["default"] for t in trials["trials"]] == [False, True]
    assert trials["trials"][1]["params"] == {"lr": 1e-3}
    assert (
        tune(runner, ["fm"], space, Budget(trials=2, epochs=1), tmp_path)["models"]["fm"] == trials
    )


def test_the_median_pruner_stops_a_hopeless_trial(tmp_path: Path) -> None:
    budget = Budget(trials=4)
    study = open_study(tmp_path, "m", seed=0, budget=budget)
    good = study.ask()
    for step in range(6):
        good.report(0.9, step)
    study.tell(good, 0.9)
    bad, fine = study.ask(), study.ask()
    ask = Reporter(storage_url(tmp_path), "m", bad._trial_id, budget)
    assert not ask(1, 0.5)  # within the warm-up epoch (4 evaluations): never pruned
    assert ask(5, 0.5)
    assert not Reporter(storage_url(tmp_path), "m", fine._trial_id, budget)(5, 0.95)


def test_a_bad_space_names_its_key(tmp_path: Path, small_prepared: Path) -> None:
    with pytest.raises(ValueError, match="unknown key 'learning_rate' for model fm.*lr"):
        check_space(Space(params={"learning_rate": Range(low=1e-4, high=1e-3)}), ["fm"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"lr": {"low": 1e-2, "high": 1e-3}}))
    with pytest.raises(ValueError, match=r"lr.*empty or inverted range"):
        load_space(bad)
    bad.write_text(yaml.safe_dump({"dropout": {"choices": []}}))
    with pytest.raises(ValueError, match="dropout"):
        load_space(bad)
    bad.write_text(yaml.safe_dump({"expert_hidden": {"choices": [[64, 32]]}}))
    with pytest.raises(ValueError, match="expert_hidden.*numbers, strings or booleans"):
        load_space(bad)
    bad.write_text(yaml.safe_dump({"models": {"nope": {"dropout": {"choices": [0.1]}}}}))
    with pytest.raises(KeyError, match="known models"):
        check_space(load_space(bad), ["fm"])
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"hidden": {"choices": [1]}}))
    result = _tune(small_prepared, tmp_path / "t", space, 1)
    assert result.exit_code != 0 and "unknown key 'hidden'" in result.output
    result = _cli("experiment", "variants", "--data", str(small_prepared), "--tuned", str(tmp_path))
    assert result.exit_code != 0 and "--tuned goes with the compare suite" in result.output
