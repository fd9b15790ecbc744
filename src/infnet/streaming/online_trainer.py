"""The online trainer: a model updated incrementally from the sample parts, in order.

It starts from a run directory (its best checkpoint) or a model directory (`infnet export`,
its weights.pt), and from then on from its own state file. Micro-batches are the next
`batch_size` training samples (held-out ones are skipped, samples.py) after the offset,
each one step of `training/step.train_step` with the run's losses and task weighting.
Every `commit_every` steps the model, the optimiser, the loss's state, the RNG and the
offset (the emission number of the last sample applied) are written to one file,
atomically (save_checkpoint: temporary file and rename). A trainer killed at any point
restarts from its last commit and takes the very steps it would have taken: no sample is
lost, none is applied twice, and the weights are those of an uninterrupted run.

The state file is a checkpoint (`load_model` reads it), so the publisher exports from it;
`progress.json` beside it holds the committed progress the publisher polls.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from infnet.config import validate
from infnet.models.checkpoint import load_checkpoint, load_model, save_checkpoint
from infnet.streaming.samples import SampleParts
from infnet.training.config import RunConfig, TrainConfig
from infnet.training.losses import TaskLoss
from infnet.training.optim import make_optimizer
from infnet.training.step import train_step

STATE = "state.pt"
PROGRESS = "progress.json"  # the committed progress, small


def _start_checkpoint(start: Path) -> Path:
    for name in ("best.pt", "weights.pt"):
        if (start / name).is_file():
            return start / name
    if start.is_file():
        return start
    raise FileNotFoundError(
        f"{start}: neither a run directory (best.pt) nor a model directory (weights.pt)"
    )


class OnlineTrainer:
    def __init__(
        self,
        start: str | Path,
        samples: str | Path,
        out: str | Path,
        *,
        batch_size: int = 256,
        lr: float | None = None,
        commit_every: int = 1,
        holdout: float = 0.05,
        traffic_arm: str | None = None,
    ) -> None:
        self.samples_dir, self.out = Path(samples), Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.batch_size, self.commit_every, self.holdout = batch_size, commit_every, holdout
        self.traffic_arm = traffic_arm  # train on this A/B arm's samples only
        self.path = self.out / STATE
        resuming = self.path.is_file()
        source = self.path if resuming else _start_checkpoint(Path(start))
        schema = SampleParts(self.samples_dir, holdout=holdout).schema
        self.model, saved = load_model(source, schema)
        self.saved_config = saved
        run = validate(RunConfig, saved, where=str(source))
        train: TrainConfig = run.train.model_copy(update={"lr": lr} if lr is not None else {})
        self.train_config = train
        self.loss = TaskLoss(schema, train)
        self.optimizer = make_optimizer(self.model, train, list(self.loss.parameters()))
        self.offset, self.steps, self.trained = 0, 0, 0
        if resuming:
            state = load_checkpoint(self.path)
            self.loss.load_state_dict(state["loss"])
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"])
            self.offset, self.steps, self.trained = (int(x) for x in state["progress"])
        else:
            torch.manual_seed(train.seed)
        self.source = str(source)

    def commit(self) -> None:
        save_checkpoint(
            self.path,
            {
                "model": self.model.state_dict(),
                "loss": self.loss.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rng": torch.get_rng_state(),
                "progress": torch.tensor([self.offset, self.steps, self.trained]),
                "started_from": json.dumps(self.source),
            },
            config=self.saved_config,
            schema=self.model.schema,
        )
        # the publisher polls this, not the checkpoint; written after it, so never ahead
        tmp = self.out / f".{PROGRESS}.tmp"
        tmp.write_text(json.dumps(self.progress()))
        os.replace(tmp, self.out / PROGRESS)

    def progress(self) -> dict[str, int]:
        return {"offset": self.offset, "steps": self.steps, "trained": self.trained}

    def run(self, *, flush: bool = False, max_steps: int | None = None) -> int:
        """Train on every full micro-batch after the offset (with `flush`, the last short one
        too), committing every `commit_every` steps and at the end; the steps taken."""
        data = SampleParts(
            self.samples_dir, holdout=self.holdout, after=self.offset, arm=self.traffic_arm
        )
        if data.frame is None:
            return 0
        rows = data.rows("train")
        taken = 0
        for lo in range(0, len(rows), self.batch_size):
            index = rows[lo : lo + self.batch_size]
            if len(index) < self.batch_size and not flush:
                break
            if max_steps is not None and taken >= max_steps:
                break
            train_step(
                self.model, data.batch_at("train", index), self.loss, self.optimizer,
                grad_clip=self.train_config.grad_clip,
            )  # fmt: skip
            self.offset = int(data.seq(index[-1:])[0])
            self.steps += 1
            self.trained += len(index)
            taken += 1
            if self.steps % self.commit_every == 0:
                self.commit()
        if taken and self.steps % self.commit_every:
            self.commit()
        return taken

    def weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.model.state_dict().items()}
