"""The embedded loop: matcher, sample producer, online trainer and publisher in one process.

One `tick` is one pass of the deployment figure's training and update pipelines: a step of
the matcher, the full parts it completes, every full batch they hold, and a publish when
one is due. The trainer and the publisher start with the first part (the publisher judges
on held-out samples, so there is nothing to do before one). Everything lives under OUT:

    OUT/matcher.sqlite   the matcher's state, offsets and emitted samples
    OUT/samples/         the sample parts
    OUT/trainer/         the trainer's committed state
    OUT/versions/        the published versions and published.json
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from infnet.data.schema import Schema
from infnet.streaming.events import EventLog
from infnet.streaming.label_matcher import LabelMatcher, MatcherConfig
from infnet.streaming.metrics import MatcherMetrics, PublisherMetrics
from infnet.streaming.online_trainer import OnlineTrainer
from infnet.streaming.publisher import Publisher, PublisherConfig
from infnet.streaming.samples import SampleWriter


@dataclass
class Tick:
    read: int  # event log entries the matcher read
    emitted: int  # samples the matcher emitted
    matched_at: float  # wall clock when the matcher's step committed
    written: int  # samples written into parts
    steps: int  # model updates
    decision: dict[str, Any] | None  # the publisher's, when it judged a version


class StreamLoop:
    def __init__(
        self,
        log: EventLog,
        start: str | Path,
        serving: str | Path,
        out: str | Path,
        *,
        server: str | None = None,
        token: str | None = None,
        arm: str | None = None,
        matcher: MatcherConfig | None = None,
        publisher: PublisherConfig | None = None,
        batch_size: int = 256,
        lr: float | None = None,
        part_rows: int = 4096,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.start, self.serving, self.out = Path(start), Path(serving), Path(out)
        self.server, self.token, self.arm = server, token, arm
        self.publisher_config = publisher or PublisherConfig()
        self.batch_size, self.lr = batch_size, lr
        schema_file = self.serving / "schema.json"
        self.matcher = LabelMatcher(log, self.out / "matcher.sqlite", Schema.load(schema_file),
                                    matcher)  # fmt: skip
        self.writer = SampleWriter(self.out / "matcher.sqlite", self.out / "samples", schema_file,
                                   part_rows=part_rows)  # fmt: skip
        self.trainer: OnlineTrainer | None = None
        self.publisher: Publisher | None = None
        self.registry = registry or CollectorRegistry()
        self.metrics: list[MatcherMetrics | PublisherMetrics] = [
            MatcherMetrics(self.matcher, None, registry=self.registry)
        ]

    def _start(self) -> None:
        self.trainer = OnlineTrainer(self.start, self.out / "samples", self.out / "trainer",
                                     batch_size=self.batch_size, lr=self.lr)  # fmt: skip
        self.publisher = Publisher(
            self.out / "trainer", self.out / "samples", self.out / "versions",
            serving=self.serving, server=self.server, token=self.token, arm=self.arm,
            config=self.publisher_config,
        )  # fmt: skip
        self.metrics.append(PublisherMetrics(self.publisher, self.registry))

    def tick(self, *, drain: bool = False) -> Tick:
        """One pass. With `drain`, once the log is read up: every window closed, a last
        short part and batch written and trained, and a version judged."""
        before = self.matcher.counts["samples"]
        read = self.matcher.step()
        end = drain and read == 0
        if end:
            self.matcher.step(drain=True)
        matched_at = time.time()
        written = self.writer.flush(force=end)
        if self.trainer is None and self.writer.written_to:
            self._start()
        steps = self.trainer.run(flush=end) if self.trainer is not None else 0
        decision = None
        if self.publisher is not None and (self.publisher.due() or end):
            decision = self.publisher.publish()
        for m in self.metrics:
            m.update()
        emitted = self.matcher.counts["samples"] - before
        return Tick(read, emitted, matched_at, written, steps, decision)

    def close(self) -> None:
        self.matcher.close()
