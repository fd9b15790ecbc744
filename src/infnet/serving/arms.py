"""A/B arms: which model serves a user, and the hot swap of one arm's model.

A user goes to an arm by a stable hash bucket (`ServerConfig.bucket`); each arm owns a
range of buckets. An `Arm` is immutable: a reload builds and warms up a whole new one and
replaces it in one assignment, so a request routed before the swap finishes on the model
it started with, and a model that fails to load or does not fit the features never serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from starlette.concurrency import run_in_threadpool

from infnet.data import layout
from infnet.serving.config import ArmConfig, ServerConfig
from infnet.serving.features import Assembler
from infnet.serving.ranking import Ranker
from infnet.serving.requests import RequestError
from infnet.serving.runtime import ModelLoadError, ServingModel, load_model_dir


@dataclass(frozen=True)
class Arm:
    """One A/B arm as served at a moment; a reload replaces the whole object."""

    name: str
    buckets: tuple[int, int]
    model: ServingModel
    assembler: Assembler
    ranker: Ranker


def load_arm(config: ArmConfig, server: ServerConfig) -> Arm:
    """The arm's model loaded and warmed up, with its feature assembler and ranker."""
    eager = server.eager if config.eager is None else config.eager
    model = load_model_dir(config.model, eager=eager, threads=server.inference_threads)
    return Arm(
        name=config.name,
        buckets=config.buckets,
        model=model,
        assembler=Assembler(model.schema, model.path / layout.VOCAB_DIR, server.utc_offset_hours),
        ranker=Ranker(model.schema.task_names, server.ranking.formula, server.ranking.bid_formula),
    )


class ArmTable:
    """The arms in config order, routed by user bucket."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._arms = [load_arm(a, config) for a in config.arm_list()]
        self._bucket_arm = np.empty(config.num_buckets, np.int64)
        for i, a in enumerate(self._arms):
            self._bucket_arm[a.buckets[0] : a.buckets[1]] = i
        self._lock = asyncio.Lock()
        self._roots = (
            [Path(config.reload_root).resolve()]
            if config.reload_root
            else sorted({Path(a.model).resolve().parent for a in config.arm_list()})
        )

    def __getitem__(self, i: int) -> Arm:
        return self._arms[i]

    def __iter__(self) -> Iterator[Arm]:
        return iter(list(self._arms))

    def __len__(self) -> int:
        return len(self._arms)

    def route(self, user_id: str) -> Arm:
        return self._arms[self._bucket_arm[self.config.bucket(user_id)]]

    def _index(self, name: str | None) -> int:
        names = [a.name for a in self._arms]
        if name is None:
            if len(names) != 1:
                raise RequestError("arm", f"required with several arms ({names})")
            return 0
        if name not in names:
            raise RequestError("arm", f"unknown arm {name!r} (arms: {names})")
        return names.index(name)

    async def reload(
        self,
        model_dir: str,
        arm_name: str | None,
        eager: bool | None,
        problems: Callable[[ServingModel], list[str]],
    ) -> tuple[Arm, Arm]:
        """Load `model_dir` into the arm off the event loop, refuse it if `problems` names
        any (it does not fit the features), then swap it in; (old arm, new arm)."""
        index = self._index(arm_name)
        target = Path(model_dir).resolve()
        if not any(target.is_relative_to(root) for root in self._roots):
            raise RequestError(
                "model",
                f"reload refused, {self._arms[index].model.version} keeps serving: {model_dir} "
                f"is not under the reload root ({', '.join(map(str, self._roots))}; reload_root)",
            )
        async with self._lock:
            old = self._arms[index]
            config = ArmConfig(name=old.name, model=model_dir, buckets=old.buckets, eager=eager)

            def load() -> Arm:
                arm = load_arm(config, self.config)
                found = problems(arm.model)
                if found:
                    raise ModelLoadError(
                        f"{model_dir}: does not fit the feature store: {'; '.join(found)}"
                    )
                return arm

            try:
                new = await run_in_threadpool(load)
            except Exception as err:
                raise RequestError(
                    "model", f"reload refused, {old.model.version} keeps serving: {err}"
                ) from None
            self._arms[index] = new  # atomic: requests routed from now on get the new model
            return old, new
