"""Prometheus metrics of the streaming processes (each its own registry and port)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from infnet.streaming.events import STREAMS
from infnet.streaming.label_matcher import LabelMatcher


class MatcherMetrics:
    def __init__(self, matcher: LabelMatcher, port: int, host: str = "127.0.0.1") -> None:
        self.matcher = matcher
        r = self.registry = CollectorRegistry()
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
