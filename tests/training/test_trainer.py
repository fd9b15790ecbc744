import json
import math

import numpy as np
import pytest
import torch

from infnet.config import ConfigError
from infnet.data.loader import PreparedDataset
from infnet.models.checkpoint import CheckpointError
from infnet.training.commands import resolve_run_config
from infnet.training.config import RunConfig, TrainConfig
from infnet.training.evaluation import predict
from infnet.training.losses import TaskLoss
from infnet.training.optim import make_schedule
from infnet.training.rundir import load_run
from infnet.training.trainer import Trainer

SMALL = {"embedding_dim": 8}


def _run(data, model="shared_bottom", **train) -> RunConfig:
    train = {"epochs": 2, "batch_size": 512, "eval_batch_size": 4096, **train}
    return RunConfig(data=str(data), model=model, model_options=SMALL, train=TrainConfig(**train))


def test_fit_writes_run_directory_and_is_deterministic(small_prepared, tmp_path):
    a = Trainer.from_config(_run(small_prepared), tmp_path / "a", progress=False).fit()
    b = Trainer.from_config(_run(small_prepared), tmp_path / "b", progress=False).fit()
    assert a["test"] == b["test"]  # seeded and deterministic on CPU
    for name in (
        "config.json",
        "metrics.jsonl",
        "best.pt",
        "last.pt",
        "test_metrics.json",
        "log.txt",
    ):
        assert (tmp_path / "a" / name).is_file(), name
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    assert 0.5 < a["test"]["mtl_auc"] < 1.0


def test_checkpoint_round_trip_gives_identical_predictions(small_prepared, tmp_path):
    trainer = Trainer.from_config(_run(small_prepared), tmp_path / "run", progress=False)
    trainer.fit()  # restores best.pt into trainer.model
    _, model, data = load_run(tmp_path / "run")
    p1 = predict(trainer.model, data, "test")
    p2 = predict(model, data, "test")
    np.testing.assert_array_equal(p1.outputs, p2.outputs)


def test_tampered_checkpoint_is_refused_naming_the_file(small_prepared, tmp_path):
    Trainer.from_config(_run(small_prepared, epochs=1), tmp_path / "run", progress=False).fit()
    best = tmp_path / "run" / "best.pt"
    best.write_bytes(best.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="best.pt"):
        load_run(tmp_path / "run")


def test_checkpoint_of_another_model_config_is_refused(small_prepared, tmp_path):
    Trainer.from_config(_run(small_prepared, epochs=1), tmp_path / "run", progress=False).fit()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["model_options"]["embedding_dim"] = 4
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"best\.pt.*\n.*in checkpoint"):
        load_run(tmp_path / "run")


def test_checkpoint_with_mismatching_schema_names_the_field(small_prepared, tmp_path):
    from infnet.models.checkpoint import check_compatible

    data = PreparedDataset(small_prepared)
    other = data.schema.model_copy(deep=True)
    other.fields[0].vocab_size += 5
    with pytest.raises(CheckpointError, match=f"field '{other.fields[0].name}': vocab_size"):
        check_compatible("x.pt", data.schema, other)


def test_resume_after_interruption_matches_uninterrupted_run(small_prepared, tmp_path, monkeypatch):
    run = _run(small_prepared, epochs=2, eval_every=5)
    straight = Trainer.from_config(run, tmp_path / "straight", progress=False)
    straight.fit()

    interrupted = Trainer.from_config(run, tmp_path / "resumed", progress=False)
    import infnet.training.trainer as trainer_module

    original = trainer_module.train_step
    calls = {"n": 0}

    def failing_step(*args):
        calls["n"] += 1
        if calls["n"] == 13:  # after the evaluation at step 10, mid-epoch
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(trainer_module, "train_step", failing_step)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    monkeypatch.setattr(trainer_module, "train_step", original)

    resumed = Trainer.from_config(run, tmp_path / "resumed", progress=False)
    assert resumed.resume()
    assert resumed.global_step == 10
    resumed.fit()
    for (k, v1), v2 in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(v1, v2, msg=k)


def test_masked_label_does_not_change_the_loss(small_prepared):
    data = PreparedDataset(small_prepared)
    batch = next(data.batches("train", 64))
    loss = TaskLoss(data.schema, TrainConfig())
    outputs = torch.randn(len(batch), data.schema.num_tasks)
    base, _ = loss(outputs, batch)
    batch.label_mask[:5, 0] = False
    masked, _ = loss(outputs, batch)
    batch.labels[:5, 0] = 1 - batch.labels[:5, 0]
    flipped, _ = loss(outputs, batch)
    assert masked.item() != base.item()
    assert flipped.item() == masked.item()


def test_warmup_then_cosine_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_schedule(opt, TrainConfig(schedule="cosine", warmup_steps=4), total_steps=14)
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(lrs[:4], [0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(0.5)
    assert lrs[-1] < 0.05


def test_misspelt_key_names_the_closest_valid_one(small_prepared):
    with pytest.raises(ConfigError, match="did you mean 'patience'"):
        resolve_run_config(small_prepared, "shared_bottom", None, ["train.patiense=3"])
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        resolve_run_config(small_prepared, "shared_bottom", None, ["epocs=3"])
    run = resolve_run_config(small_prepared, "shared_bottom", None, ["lr=3e-4", "embedding_dim=4"])
    assert run.train.lr == 3e-4 and run.model_options["embedding_dim"] == 4


def test_unknown_model_lists_the_known_ones(small_prepared):
    with pytest.raises(KeyError, match="known models: .*infnet"):
        resolve_run_config(small_prepared, "infnett", None, [])


def test_unknown_task_in_loss_config_is_an_error(small_prepared):
    with pytest.raises(ValueError, match="unknown tasks"):
        Trainer.from_config(_run(small_prepared, task_weights={"clik": 2.0}), None, progress=False)


def _metrics(schema, score):
    """Validation metrics whose every task scores `score`."""
    out = {"mtl_auc": score, "mtl_gauc": score}
    for t in schema.tasks:
        keys = ("auc", "gauc", "logloss") if t.kind == "binary" else ("mae", "rmse", "r2")
        out[t.name] = {k: score for k in keys} | {"n": 10}
    return out


def test_without_run_directory_the_best_weights_are_restored(small_prepared, monkeypatch):
    import infnet.training.trainer as trainer_module

    scores = iter([0.9, 0.8, 0.7, 0.5])  # the first evaluation is the best
    monkeypatch.setattr(
        trainer_module,
        "evaluate_split",
        lambda model, data, *a: _metrics(data.schema, next(scores)),
    )
    snapshots = []
    original = Trainer._evaluate_and_track

    def track(self, train_loss):
        stop = original(self, train_loss)
        snapshots.append({k: v.clone() for k, v in self.model.state_dict().items()})
        return stop

    monkeypatch.setattr(Trainer, "_evaluate_and_track", track)
    trainer = Trainer.from_config(_run(small_prepared, epochs=3), None, progress=False)
    trainer.fit()
    assert trainer.best["epoch"] == 1
    for k, v in trainer.model.state_dict().items():
        torch.testing.assert_close(v, snapshots[0][k], msg=k)
    assert any(not torch.equal(v, snapshots[-1][k]) for k, v in trainer.model.state_dict().items())


def test_a_hand_edited_config_that_still_fits_the_weights_is_refused(small_prepared, tmp_path):
    # dropout changes no shape: a loader that trusted config.json would build another model
    # around the same weights and report other metrics
    Trainer.from_config(_run(small_prepared, epochs=1), tmp_path / "run", progress=False).fit()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["model_options"]["dropout"] = 0.5
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model_options: .* in checkpoint"):
        load_run(tmp_path / "run")


def test_a_damaged_split_stops_the_run_before_its_first_step(small_prepared, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(small_prepared, data)
    part = sorted((data / "test").glob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[: len(part.read_bytes()) // 2])
    trainer = Trainer.from_config(_run(data, epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"test/part-00000.parquet: not a readable part file"):
        trainer.fit()
    assert trainer.global_step == 0 and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_task_below_chance_is_flagged_in_the_log_metrics_and_test_metrics(
    flipped_prepared, tmp_path
):
    result = Trainer.from_config(_run(flipped_prepared), tmp_path / "run", progress=False).fit()
    assert result["test"]["flipped"]["auc"] < 0.5 < result["test"]["is_click"]["auc"]
    assert any(f.startswith("flipped: valid AUC") and "below chance" in f for f in result["flags"])
    assert any(f.startswith("flipped: test AUC") for f in result["flags"])
    assert not any(f.startswith(("is_click", "long_view")) for f in result["flags"])
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(any(f.startswith("flipped") for f in x["flags"]) for x in lines)
    saved = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert saved["flags"] == result["flags"]
    assert "kept checkpoint: flipped: valid AUC" in (tmp_path / "run" / "log.txt").read_text()


def test_max_steps_ends_training_and_keeps_the_best_checkpoint(small_prepared, tmp_path):
    trainer = Trainer.from_config(
        _run(small_prepared, epochs=5, max_steps=3), tmp_path / "run", progress=False
    )
    result = trainer.fit()
    assert trainer.global_step == result["steps"] == 3
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [3]  # evaluated once, where the budget ended
    assert math.isfinite(result["test"]["mtl_auc"])


def test_a_time_limit_ends_training_and_counts_across_a_resume(small_prepared, tmp_path):
    run = _run(small_prepared, epochs=50, time_limit_s=1e-6)
    trainer = Trainer.from_config(run, tmp_path / "run", progress=False)
    trainer.fit()
    assert trainer.global_step == 1  # the budget is checked after every step
    resumed = Trainer.from_config(run, tmp_path / "run", progress=False)
    assert resumed.resume() and resumed.elapsed >= trainer.elapsed > 0
    resumed.fit()
    assert resumed.global_step == 1  # spent already: nothing more is trained


def test_uncertainty_weights_are_trained_and_resumed(small_prepared, tmp_path, monkeypatch):
    run = _run(small_prepared, epochs=2, task_weighting="uncertainty")
    trainer = Trainer.from_config(run, tmp_path / "run", progress=False)
    trainer.fit()
    learned = trainer.loss.log_var.detach().clone()
    assert (learned != 0).all()  # in the optimiser: every task's log variance moved
    resumed = Trainer.from_config(run, tmp_path / "run", progress=False)
    resumed.resume()
    torch.testing.assert_close(resumed.loss.log_var.detach(), learned)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert set(lines[-1]["loss_weights"]) == set(trainer.schema.task_names)


def test_compiled_train_steps_give_the_eager_weights(small_prepared, tmp_path):
    torch._dynamo.reset()
    runs = {}
    for compiled in (False, True):
        config = _run(small_prepared, model="infnet", epochs=1, max_steps=4, compile=compiled)
        # Adam's first steps are about lr * sign(gradient), so a gradient near zero moves its
        # weight a whole step whichever way rounding tips it: with v1's default 256 x 128
        # heads the two runs' weights end 1e-3 apart after 4 steps, with 64-wide heads 2e-7
        config = config.model_copy(update={"model_options": {**SMALL, "head_hidden": [64]}})
        trainer = Trainer.from_config(config, tmp_path / str(compiled), progress=False)
        trainer.fit()
        runs[compiled] = trainer.model.state_dict()
    for name, eager in runs[False].items():
        torch.testing.assert_close(runs[True][name], eager, rtol=1e-4, atol=1e-5, msg=name)


def test_on_evaluate_stops_the_run_at_that_evaluation(small_prepared) -> None:
    # what a tuner's pruner does with a hopeless trial (experiments/tune.py)
    config = RunConfig(
        data=str(small_prepared),
        model="fm",
        train=TrainConfig(epochs=3, batch_size=1024, eval_every=2),
    )
    trainer = Trainer.from_config(config, progress=False)
    seen: list[tuple[int, float]] = []
    trainer.on_evaluate = lambda i, score: seen.append((i, score)) or i == 1
    result = trainer.fit()
    assert [i for i, _ in seen] == [0, 1] and result["pruned"]
    assert result["steps"] == 4 and len(trainer.evaluations) == 2
