"""The A/B test's nightly model updates: the streaming loop with one label matcher and
sample writer over the whole event log, and per arm an online trainer and a publisher that
read that arm's samples only, so each arm learns from (and is judged on) its own users."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from infnet.data.schema import Schema
from infnet.streaming.events import EventLog
from infnet.streaming.label_matcher import LabelMatcher
from infnet.streaming.online_trainer import OnlineTrainer
from infnet.streaming.publisher import Publisher, PublisherConfig, PublishError
from infnet.streaming.samples import SampleWriter


class ArmUpdates:
    """The streaming loop of the test: one matcher and sample writer over the whole event
    log; per arm an online trainer and a publisher that read that arm's samples only."""

    def __init__(
        self,
        events: EventLog,
        root: Path,
        runs: dict[str, Path],
        model_dirs: dict[str, Path],
        server: str,
        token: str,
        lr: float | None,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        schema_file = model_dirs["control"] / "schema.json"
        self.matcher = LabelMatcher(events, root / "matcher.sqlite", Schema.load(schema_file))
        self.writer = SampleWriter(root / "matcher.sqlite", root / "samples", schema_file,
                                   part_rows=1024)  # fmt: skip
        self.root, self.runs, self.model_dirs, self.lr = root, runs, model_dirs, lr
        self.server, self.token = server, token
        self.trainers: dict[str, OnlineTrainer] = {}
        self.publishers: dict[str, Publisher] = {}

    def nightly(self, *, drain: bool) -> dict[str, Any]:
        started = time.time()
        while self.matcher.step():
            pass
        if drain:
            self.matcher.step(drain=True)
        written = self.writer.flush(force=drain)
        out: dict[str, Any] = {"samples_written": written, "match_s": time.time() - started}
        if not self.writer.written_to:
            return out
        for arm, run in self.runs.items():
            if arm not in self.trainers:
                # one commit a night (at the end of each run): the night is the unit of work
                self.trainers[arm] = OnlineTrainer(run, self.root / "samples", self.root / arm / "trainer",
                                                   lr=self.lr, traffic_arm=arm,
                                                   commit_every=1 << 30)  # fmt: skip
                self.publishers[arm] = Publisher(
                    self.root / arm / "trainer", self.root / "samples", self.root / arm / "versions",
                    serving=self.model_dirs[arm], server=self.server, token=self.token,
                    arm=arm, traffic_arm=arm, config=PublisherConfig(every_samples=1, every_s=1e9),
                )  # fmt: skip
            started = time.time()
            steps = self.trainers[arm].run(flush=True)
            decision: dict[str, Any] = {"steps": steps, "train_s": time.time() - started}
            if steps:
                started = time.time()
                try:
                    decision |= self.publishers[arm].publish()
                except PublishError as err:
                    decision |= {"result": "not_judged", "why": str(err)}
                decision["publish_s"] = time.time() - started
            out[arm] = decision
        return out
