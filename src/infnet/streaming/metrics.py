"""Prometheus metrics of the streaming processes (each its own registry and port)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from infnet.streaming.events import STREAMS
from infnet.streaming.label_matcher import LabelMatcher
from infnet.streaming.publisher import Publisher


class MatcherMetrics:
    def __init__(
        self,
        matcher: LabelMatcher,
        port: int | None,
        host: str = "127.0.0.1",
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.matcher = matcher
        r = self.registry = registry or CollectorRegistry()
        self.lag = Gauge(
            "infnet_matcher_lag", "Entries not yet read, per stream", ["stream"], registry=r
        )
        self.watermark_delay = Gauge(
            "infnet_matcher_watermark_delay_seconds",
            "Latest event time read minus the watermark",
            registry=r,
        )
        self.counts = Gauge(
            "infnet_matcher_events",
            "Events by outcome since the state was created",
            ["outcome"],
            registry=r,
        )
        self.dead = Gauge(
            "infnet_matcher_dead_letters", "Dead letters by reason", ["reason"], registry=r
        )
        self.positive_rate = Gauge(
            "infnet_matcher_positive_rate",
            "Share of emitted samples positive, per task",
            ["task"],
            registry=r,
        )
        self.join_rate = Gauge(
            "infnet_matcher_join_rate", "Share of labels joined to their impression", registry=r
        )
        self.samples_per_s = Gauge(
            "infnet_matcher_samples_per_second", "Samples emitted per second", registry=r
        )
        self.held = Gauge(
            "infnet_matcher_state_rows", "Rows of state held, by kind", ["kind"], registry=r
        )
        self._last = (time.monotonic(), matcher.counts["samples"])
        if port is not None:
            start_http_server(port, host, registry=r)

    def update(self) -> None:
        m, c = self.matcher, self.matcher.counts
        for s in STREAMS:
            self.lag.labels(stream=s).set(m.log.lag(s, m.consumer))
        if m.high:
            self.watermark_delay.set(max(0.0, (max(m.high.values()) - m.watermark) / 1000))
        for k in ("impressions", "labels", "samples", "labels_joined", "duplicate_impression",
                  "duplicate_label", "redelivered"):  # fmt: skip
            self.counts.labels(outcome=k).set(c[k])
        for k, v in c.items():
            if k.startswith("dead:"):
                self.dead.labels(reason=k[5:]).set(v)
        for task in m.tasks:
            self.positive_rate.labels(task=task).set(c[f"positive:{task}"] / max(1, c["samples"]))
        self.join_rate.set(c["labels_joined"] / max(1, c["labels"]))
        for kind, n in m.state_sizes().items():
            self.held.labels(kind=kind).set(n)
        now, samples = time.monotonic(), c["samples"]
        t0, s0 = self._last
        if now - t0 >= 1:
            self.samples_per_s.set((samples - s0) / (now - t0))
            self._last = (now, samples)


class PublisherMetrics:
    """The publisher's side: what is served, how stale it is, what was decided."""

    def __init__(self, publisher: Publisher, registry: CollectorRegistry) -> None:
        self.publisher = publisher
        r = registry
        self.version = Gauge(
            "infnet_published_version_info", "The version the publisher serves (value 1)",
            ["version"], registry=r,
        )  # fmt: skip
        self.staleness = Gauge(
            "infnet_model_staleness_seconds", "Seconds since the served version was published",
            registry=r,
        )  # fmt: skip
        self.trained = Gauge(
            "infnet_published_trained_samples", "Samples trained on when the publisher last decided",
            registry=r,
        )  # fmt: skip
        self.decisions = Gauge(
            "infnet_publish_decisions", "Decisions by result since the versions directory began",
            ["result"], registry=r,
        )  # fmt: skip

    def update(self) -> None:
        record = self.publisher.record
        self.version.clear()
        self.version.labels(version=self.publisher.serving.name).set(1)
        self.staleness.set(
            max(0.0, time.time() - record.get("served_since", record["published_at"]))
        )
        self.trained.set(record["trained"])
        for result, n in record.get("results", {}).items():
            self.decisions.labels(result=result).set(n)
