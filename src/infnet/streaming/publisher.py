"""The publisher: the online trainer's model, exported, judged, and swapped into the server.

Every `every_samples` trained samples (or `every_s` seconds with any new ones) it loads the
trainer's committed state, scores it and the serving version on the most recent `window`
held-out samples (samples.py: never trained on), and refuses it when its MTL-AUC falls more
than `margin` below the serving version's. Otherwise it exports it with the offline export
(`export_model`, ONNX checked against eager PyTorch on those rows) into VERSIONS/vNNNNNN,
written whole or not at all, hot-swaps it in with POST /admin/reload, and keeps the newest
`keep` versions (never the serving one). `rollback` swaps an earlier version back.

    VERSIONS/published.json   the serving version, its MTL-AUC, every decision with figures
    VERSIONS/vNNNNNN/          model directories, as `infnet export` writes them
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from pydantic import Field

from infnet import metrics
from infnet.config import Strict
from infnet.data import layout
from infnet.models.base import MultiTaskModel, TaskActivation
from infnet.models.checkpoint import load_model
from infnet.serving.export import WEIGHTS_FILE, export_model
from infnet.streaming.online_trainer import PROGRESS, STATE
from infnet.streaming.samples import SampleParts

RECORD = "published.json"


class PublisherConfig(Strict):
    every_samples: int = Field(default=20_000, ge=1)
    every_s: float = Field(default=3600.0, gt=0)
    margin: float = Field(default=0.005, ge=0)  # MTL-AUC a new version may lose
    window: int = Field(default=5000, ge=10)  # most recent held-out samples judged on
    keep: int = Field(default=5, ge=1)
    holdout: float = Field(default=0.05, gt=0, lt=1)  # as the trainer's


class PublishError(RuntimeError):
    pass


class Publisher:
    def __init__(
        self,
        trainer_dir: str | Path,
        samples: str | Path,
        versions: str | Path,
        *,
        serving: str | Path | None = None,
        server: str | None = None,
        token: str | None = None,
        arm: str | None = None,
        config: PublisherConfig | None = None,
        traffic_arm: str | None = None,
    ) -> None:
        self.trainer_state = Path(trainer_dir) / STATE
        self.traffic_arm = traffic_arm  # judge on this A/B arm's held-out samples only
        self.samples, self.versions = Path(samples), Path(versions)
        self.server, self.token, self.arm = server, token, arm
        self.config = config or PublisherConfig()
        self.versions.mkdir(parents=True, exist_ok=True)
        path = self.versions / RECORD
        if path.is_file():
            self.record = json.loads(path.read_text())
        elif serving is None:
            raise ValueError(
                f"{self.versions}: no {RECORD} yet; give --serving MODEL_DIR, the version now served"
            )
        else:
            self.record = {"serving": str(Path(serving).resolve()), "trained": 0,
                           "published_at": time.time(), "next": 1, "decisions": []}  # fmt: skip

    def _save(self) -> None:
        path = self.versions / RECORD
        tmp = path.with_name(f".{RECORD}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.record, indent=1))
        os.replace(tmp, path)

    @property
    def serving(self) -> Path:
        return Path(self.record["serving"])

    # --- judging --------------------------------------------------------------------------
    def _window(self) -> tuple[SampleParts, np.ndarray]:
        data = SampleParts(self.samples, holdout=self.config.holdout, arm=self.traffic_arm)
        if data.frame is None:
            return data, np.zeros(0, np.int64)
        return data, data.rows("valid")[-self.config.window :]

    @torch.no_grad()
    def _score(self, model: MultiTaskModel, data: SampleParts, rows: np.ndarray) -> dict[str, Any]:
        model.eval()
        batch = data.batch_at("valid", rows)
        out = TaskActivation(data.schema)(model(batch).logits).numpy()
        return metrics.evaluate(
            data.schema.tasks,
            out,
            batch.labels.numpy(),
            batch.label_mask.numpy(),
            batch.user.numpy(),
        )

    # --- publishing -----------------------------------------------------------------------
    def _progress(self) -> dict[str, int] | None:
        """The trainer's committed offset, steps and samples (None before its first commit)."""
        progress = self.trainer_state.with_name(PROGRESS)
        return json.loads(progress.read_text()) if progress.is_file() else None

    def due(self, now: float | None = None) -> bool:
        progress = self._progress()
        if progress is None:
            return False
        new = progress["trained"] - self.record["trained"]
        waited = (now or time.time()) - self.record["published_at"]
        return new >= self.config.every_samples or (new > 0 and waited >= self.config.every_s)

    def publish(self) -> dict[str, Any]:
        """Judge the trainer's model against the serving version; export and swap it in
        unless it is refused. The decision, with its figures."""
        data, rows = self._window()
        if len(rows) < 10:
            raise PublishError(f"{self.samples}: {len(rows)} held-out samples; too few to judge on")
        # progress first: the state file read after it is at least as new (never behind it)
        progress = self._progress()
        if progress is None:
            raise PublishError(f"{self.trainer_state}: the trainer has committed nothing yet")
        trained = progress["trained"]
        candidate, config = load_model(self.trainer_state, data.schema)
        current, _ = load_model(self.serving / WEIGHTS_FILE, data.schema)
        new, old = self._score(candidate, data, rows), self._score(current, data, rows)
        decision: dict[str, Any] = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "trained": trained,
            "offset": progress["offset"],  # the last sample trained on, by emission number
            "window": len(rows),
            "mtl_auc": new["mtl_auc"],
            "serving_mtl_auc": old["mtl_auc"],
            "serving": str(self.serving),
        }
        if new["mtl_auc"] < old["mtl_auc"] - self.config.margin:
            decision["result"] = "refused"
            decision["why"] = (
                f"MTL-AUC {new['mtl_auc']:.4f} is more than {self.config.margin} below the "
                f"serving version's {old['mtl_auc']:.4f} on {len(rows)} held-out samples"
            )
        else:
            name = f"v{self.record['next']:06d}"
            out = self.versions / name
            export_model(
                candidate, self.serving / layout.SCHEMA, self.serving / layout.VOCAB_DIR,
                data.batch_at("valid", rows[-256:]), out, config=config,
                source={"streamed_from": str(self.trainer_state), "trained_samples": trained},
            )  # fmt: skip
            self.record["next"] += 1
            decision["version"] = name
            self._swap(out, decision)
        self.record["trained"] = trained
        self.record["published_at"] = time.time()
        self._decided(decision)
        return decision

    def _decided(self, decision: dict[str, Any]) -> None:
        """Recorded: the last 100 decisions whole, every result counted."""
        results = self.record.setdefault("results", {})
        results[decision["result"]] = results.get(decision["result"], 0) + 1
        self.record["decisions"] = [*self.record["decisions"], decision][-100:]
        self._save()

    def _swap(self, out: Path, decision: dict[str, Any]) -> None:
        if self.server is not None:
            body: dict[str, Any] = {"model": str(out.resolve())}
            if self.arm is not None:
                body["arm"] = self.arm
            r = httpx.post(
                f"{self.server}/admin/reload", json=body, timeout=120,
                headers={"authorization": f"Bearer {self.token or ''}"},
            )  # fmt: skip
            if r.status_code != 200:
                decision["result"] = "not_swapped"
                decision["why"] = f"the server refused it ({r.status_code}): {r.text[:300]}"
                return
            decision["served_version"] = r.json()["version"]
        decision["result"] = "published"
        self.record["serving"] = str(out.resolve())
        self.record["served_since"] = decision["served_at"] = time.time()
        self._prune()

    def _prune(self) -> None:
        names = sorted(p.name for p in self.versions.glob("v[0-9]*") if p.is_dir())
        for name in names[: -self.config.keep]:
            if (self.versions / name).resolve() != self.serving:
                shutil.rmtree(self.versions / name)

    def rollback(self, to: str) -> dict[str, Any]:
        """Serve version `to` (a name under VERSIONS) again."""
        out = self.versions / to
        if not (out / WEIGHTS_FILE).is_file():
            kept = sorted(p.name for p in self.versions.glob("v[0-9]*") if p.is_dir())
            raise ValueError(f"version {to!r} is not in {self.versions} (kept: {kept})")
        decision: dict[str, Any] = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    "rollback": to, "from": str(self.serving)}  # fmt: skip
        self._swap(out, decision)
        self._decided(decision)
        return decision
