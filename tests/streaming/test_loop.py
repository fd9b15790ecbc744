"""The embedded loop (`StreamLoop`): a tick's figures, the trainer started by the first part,
a version judged when one is due, and a drain that leaves nothing behind."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import generate_latest

from infnet.data.loader import PreparedDataset
from infnet.serving.export import export_run
from infnet.streaming.events import encode, open_event_log
from infnet.streaming.label_matcher import MatcherConfig
from infnet.streaming.loop import StreamLoop
from infnet.streaming.publisher import PublisherConfig
from infnet.streaming.samples import SampleParts

from .conftest import impressions_of


@pytest.fixture
def loop(small_prepared, start_run, tmp_path):
    export_run(start_run, tmp_path / "base")
    log = open_event_log(tmp_path / "events.sqlite")
    data = PreparedDataset(small_prepared)
    for e in impressions_of(data, "test", np.arange(data.num_rows("test"))):
        log.append("labels" if type(e).__name__ == "Label" else "impressions", [encode(e)])
    loop = StreamLoop(
        log, start_run, tmp_path / "base", tmp_path / "loop",
        matcher=MatcherConfig(batch=100),
        publisher=PublisherConfig(every_samples=300, every_s=1e9, margin=1.0, window=10),
        batch_size=64, part_rows=200,
    )  # fmt: skip
    yield loop
    loop.close()


def test_ticks_until_read_up_then_a_drain_trains_and_judges_everything(loop):
    ticks = []
    while (tick := loop.tick()).read:
        ticks.append(tick)
    assert (
        sum(t.read for t in ticks)
        == loop.matcher.counts["impressions"] + loop.matcher.counts["labels"]
    )
    assert sum(t.emitted for t in ticks) == loop.matcher.counts["samples"]
    # 900 impressions, the 30-minute windows of the last ones not closed by event time yet
    assert 0 < loop.matcher.counts["samples"] < 900
    assert sum(t.written for t in ticks) == loop.writer.written_to // 200 * 200
    assert all(t.matched_at <= u.matched_at for t, u in zip(ticks, ticks[1:], strict=False))
    first_written = next(i for i, t in enumerate(ticks) if t.written)
    assert all(t.steps == 0 and t.decision is None for t in ticks[:first_written])
    assert loop.trainer is not None and loop.trainer.steps == sum(t.steps for t in ticks)
    decisions = [t.decision for t in ticks if t.decision is not None]
    assert decisions and all(d["trained"] >= 300 * (i + 1) for i, d in enumerate(decisions))

    end = loop.tick(drain=True)
    assert end.read == 0 and end.decision is not None and end.decision["result"] == "published"
    assert loop.matcher.counts["samples"] == 900 and loop.writer.written_to == 900
    parts = SampleParts(loop.out / "samples")
    assert loop.trainer.trained == parts.num_rows("train")
    assert end.decision["trained"] == parts.num_rows("train")
    assert end.decision["offset"] == int(parts.seq(parts.rows("train")[-1:])[0])
    assert loop.publisher.serving == (loop.out / "versions" / end.decision["version"]).resolve()
    text = generate_latest(loop.registry).decode()
    assert "infnet_matcher_samples_per_second" in text
    assert f'infnet_published_version_info{{version="{end.decision["version"]}"}} 1.0' in text
