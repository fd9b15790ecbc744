"""`infnet experiment tune`: one seeded TPE study per model over one search space and one
trial budget, each trial a cached run of the Runner (so `--workers` trials train at once).

Fair by construction: every model gets the same space (experiments/space.py), the same
number of trials, the same training budget per trial (at most `epochs`, validation every
quarter epoch, early stopping after `patience` evaluations without improvement) and is
judged on the same validation figure (train.monitor, MTL-AUC by default); the test split
is never read to choose. One trial of each study (its first, or the next of a study begun
before this rule) is the model's default configuration (space.defaults), so a tune reports
no model worse than it is untuned. Hopeless trials are pruned by the median rule on the
intermediate validation scores, after a warm-up of one epoch.

Resumable: the studies live in OUT/study.db (SQLite). A trial cut short by an interruption
is marked failed (`interrupted` in tuned.json) and its parameters are asked again first, so its run
directory's last checkpoint resumes it; finished trials are never repeated. One tune
process drives a study at a time.

The small outcome, OUT/tuned.json (every trial's parameters, state, score and seconds, and
each model's best configuration), is what `infnet experiment compare --tuned` reads and
what is worth keeping in a repository (benchmarks/results/).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from infnet.experiments.runner import Runner, RunSpec, ok
from infnet.experiments.space import Space, defaults, suggest
from infnet.training.config import TrainConfig

STUDY_DB = "study.db"
TUNED = "tuned.json"
EVALS_PER_EPOCH = 4


@dataclass(frozen=True)
class Budget:
    trials: int = 20  # per model
    epochs: int = 2
    patience: int = 3  # evaluations (quarter epochs) without improvement


class Reporter:
    """A trial's intermediate validation scores, reported from the process that trains it;
    True when the pruner gives up on the trial. Pickles as its address in the storage."""

    def __init__(self, storage: str, study: str, trial_id: int, budget: Budget) -> None:
        self.storage, self.study, self.trial_id, self.budget = storage, study, trial_id, budget
        self._trial: optuna.Trial | None = None  # opened on the first report, in the worker

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_trial": None}

    def __call__(self, index: int, score: float) -> bool:
        if not math.isfinite(score):
            return False  # no score to compare; early stopping handles it
        if self._trial is None:
            study = optuna.load_study(
                study_name=self.study, storage=storage(self.storage), pruner=pruner(self.budget)
            )
            self._trial = optuna.trial.Trial(study, self.trial_id)
        self._trial.report(score, index)
        return self._trial.should_prune()


def storage_url(out: Path) -> str:
    return f"sqlite:///{(out / STUDY_DB).resolve()}"


def storage(url: str) -> optuna.storages.RDBStorage:
    # the workers report while the main process tells: wait for SQLite's lock, as long as
    # a slow disk may hold it, instead of failing the trial with "database is locked"
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


def open_study(out: Path, label: str, seed: int, budget: Budget) -> optuna.Study:
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=label,
        storage=storage(storage_url(out)),
        direction="maximize",
        load_if_exists=True,
        pruner=pruner(budget),
    )
    # Seeded by the trials already in the study: a resumed study does not replay the
    # random draws of its first trials. constant_liar: trials asked together (--workers)
    # do not all sample the same point.
    study.sampler = optuna.samplers.TPESampler(
        seed=seed + len(study.get_trials(deepcopy=False)),
        n_startup_trials=min(10, max(2, budget.trials // 3)),
        constant_liar=True,
    )
    return study


def pruner(budget: Budget) -> optuna.pruners.BasePruner:
    """The median rule once a few trials have finished and past the first epoch."""
    return optuna.pruners.MedianPruner(
        n_startup_trials=min(5, max(1, budget.trials // 4)), n_warmup_steps=EVALS_PER_EPOCH
    )


def _requeue_interrupted(study: optuna.Study) -> None:
    """Trials left running by an interrupted tune: failed, and asked again first."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        default = {"default": True} if t.user_attrs.get("default") else {}
        study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number, **default})
        study.tell(t.number, state=TrialState.FAIL)


def interrupted(study: optuna.Study) -> set[int]:
    """Numbers of the trials an interruption cut short (each has a requeued successor)."""
    trials = study.get_trials(deepcopy=False)
    return {t.user_attrs["requeued_from"] for t in trials if "requeued_from" in t.user_attrs}


def finished(study: optuna.Study) -> int:
    """Trials that count against the budget: done, pruned or failed on their own."""
    cut = interrupted(study)
    return sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) and t.number not in cut
        for t in study.get_trials(deepcopy=False)
    )


def trial_train(data_rows: int, train: dict[str, Any], budget: Budget) -> dict[str, Any]:
    """A trial's TrainConfig overrides: its sampled keys plus the shared budget."""
    batch = int(train.get("batch_size", TrainConfig().batch_size))
    steps = math.ceil(data_rows / batch)
    return {
        **train,
        "epochs": budget.epochs,
        # ceil: at most EVALS_PER_EPOCH evaluations an epoch, so the pruner's warm-up of
        # EVALS_PER_EPOCH evaluations is at least one epoch
        "eval_every": math.ceil(steps / EVALS_PER_EPOCH),
        "patience": budget.patience,
    }


def tune(
    runner: Runner,
    models: list[str],  # labels: models or the space's variants
    space: Space,
    budget: Budget,
    out: Path,
    *,
    seed: int = 0,
    base_train: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume) every model's study to `budget.trials` finished trials; write and
    return the outcome (TUNED)."""
    rows = runner.data.num_rows("train")
    for label in models:
        study = open_study(out, label, seed, budget)
        _requeue_interrupted(study)
        if not any(t.user_attrs.get("default") for t in study.get_trials(deepcopy=False)):
            # the model's defaults are one of its trials, so a tune never reports a model
            # worse than its untuned self (a study begun without it gets it on resuming)
            study.enqueue_trial(defaults(space, label), user_attrs={"default": True})
        while (done := finished(study)) < budget.trials:
            asked = [study.ask() for _ in range(min(runner.workers, budget.trials - done))]
            specs = []
            for trial in asked:
                options, train = suggest(trial, space, label)
                train = trial_train(rows, {**(base_train or {}), **train}, budget)
                specs.append(
                    RunSpec(
                        label=f"{label} trial {trial.number}",
                        model=space.model_of(label),
                        options=options,
                        train=train,
                        seed=seed,
                        on_evaluate=Reporter(storage_url(out), label, trial._trial_id, budget),
                    )
                )
                trial.set_user_attr("options", options)
                trial.set_user_attr("train", train)
            for trial, record in zip(asked, runner.run_all(specs, f"tune {label}"), strict=True):
                _tell(study, trial, record)
    outcome = summarise(out, models, space, budget, seed)
    (out / TUNED).write_text(json.dumps(outcome, indent=2, allow_nan=True))
    return outcome


def _tell(study: optuna.Study, trial: optuna.Trial, record: dict[str, Any]) -> None:
    trial.set_user_attr("seconds", float(record.get("seconds") or 0.0))
    trial.set_user_attr("run_dir", record.get("run_dir"))
    best = record.get("best") if ok(record) else None
    score = best["score"] if best else float("nan")
    if not ok(record) or not math.isfinite(score):
        trial.set_user_attr("error", record.get("error") or "no finite validation score")
        study.tell(trial, state=TrialState.FAIL)
    elif record.get("pruned"):
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, score)


def summarise(
    out: Path, models: list[str], space: Space, budget: Budget, seed: int
) -> dict[str, Any]:
    """Every model's trials and best configuration, from the studies in OUT/study.db."""
    result: dict[str, Any] = {
        "space": space.model_dump(mode="json"),
        "budget": {"trials": budget.trials, "epochs": budget.epochs, "patience": budget.patience},
        "seed": seed,
        "models": {},
    }
    for label in models:
        study = optuna.load_study(study_name=label, storage=storage(storage_url(out)))
        cut = interrupted(study)
        trials = [
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": t.params,
                "options": t.user_attrs.get("options", {}),
                "train": t.user_attrs.get("train", {}),
                "seconds": t.user_attrs.get("seconds", 0.0),
                "error": t.user_attrs.get("error"),
                "interrupted": t.number in cut,
                "default": bool(t.user_attrs.get("default")),
            }
            for t in study.get_trials(deepcopy=False)
            if t.state not in (TrialState.RUNNING, TrialState.WAITING)
        ]
        complete = [t for t in trials if t["state"] == "COMPLETE"]
        best = max(complete, key=lambda t: t["value"]) if complete else None
        result["models"][label] = {
            "model": space.model_of(label),
            "trials": trials,
            "counts": {
                s: sum(t["state"] == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")
            },
            "seconds": sum(t["seconds"] for t in trials),
            "best": None
            if best is None
            else {
                "trial": best["number"],
                "value": best["value"],
                "options": best["options"],
                "train": best["train"],
            },
        }
    return result


def load_tuned(path: Path) -> dict[str, Any]:
    """A tune outcome: the TUNED file itself or the tune's output folder."""
    file = path / TUNED if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no tune outcome here (run `infnet experiment tune`)")
    try:
        outcome = json.loads(file.read_text())
        models = outcome["models"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{file}: not a tune outcome ({type(err).__name__}: {err})") from None
    if not isinstance(models, dict):
        raise ValueError(f"{file}: not a tune outcome (models is not a mapping)")
    return outcome
