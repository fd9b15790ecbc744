"""Rank functions for tests/training/test_distributed.py: importable by the spawned ranks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from infnet.data.loader import PreparedDataset
from infnet.models import available_models
from infnet.training import distributed
from infnet.training.evaluation import evaluate_split
from infnet.training.trainer import Trainer


def every_model(data: str, out: str, configs: dict) -> None:
    """Train every model a few steps under DDP; rank 0 saves the weights and the metrics,
    and the sharded evaluation of one untrained model."""
    group = distributed.from_environment(torch.device("cpu"))
    assert group is not None
    try:
        dataset = PreparedDataset(data)
        states, results = {}, {}
        for name in available_models():
            trainer = Trainer.from_config(
                configs[name], None, data=dataset, progress=False, group=group
            )
            results[name] = trainer.fit()["test"]
            states[name] = trainer.model.state_dict()
        probe = Trainer.from_config(configs["infnet"], None, data=dataset, progress=False).model
        valid = evaluate_split(probe, dataset, "valid", 700, group)
        if group.is_main:
            torch.save(states, Path(out) / "states.pt")
            (Path(out) / "metrics.json").write_text(json.dumps({"test": results, "valid": valid}))
    finally:
        distributed.shut_down()


def dies_after_two_steps(data: str, config) -> None:
    """Rank 1 exits abruptly at its third step; rank 0 is left waiting in a collective."""
    import infnet.training.trainer as trainer_module

    group = distributed.from_environment(torch.device("cpu"))
    assert group is not None
    original, calls = trainer_module.train_step, {"n": 0}

    def step(*args):
        calls["n"] += 1
        if group.rank == 1 and calls["n"] == 3:
            os._exit(3)
        return original(*args)

    trainer_module.train_step = step
    Trainer.from_config(config, None, data=PreparedDataset(data), progress=False, group=group).fit()
