"""Prometheus metrics of one server (its own registry, so several servers share a process)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.process_collector import ProcessCollector

LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total
        self.latency = Histogram(
            "infnet_request_latency_seconds",
            "Time to answer POST /v1/rank",
            ["arm"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "infnet_requests",
            "Ranking requests by HTTP status and arm",
            ["status", "arm"],
            registry=r,
        )
        self.errors = Counter(
            "infnet_errors",
            "Failed ranking requests by status and the field or cause",
            ["status", "reason"],
            registry=r,
        )
        self.batch_rows = Histogram(
            "infnet_batch_rows",
            "Candidate rows per model call",
            buckets=(1, 10, 50, 100, 200, 400, 800, 1600, 3200, 6400),
            registry=r,
        )
        self.batch_requests = Histogram(
            "infnet_batch_requests",
            "Requests per model call",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
            registry=r,
        )
        self.inference = Histogram(
            "infnet_inference_seconds",
            "Time of one model call",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "infnet_model_info",
            "The model version each arm serves (value 1)",
            ["arm", "version"],
            registry=r,
        )
        self.feature_version = Gauge(
            "infnet_feature_version_info",
            "The feature version in use (value 1)",
            ["version"],
            registry=r,
        )
        self.unknown = Counter(
            "infnet_unknown", "Unknown users and items scored with OOV ids", ["kind"], registry=r
        )
        self.reloads = Counter("infnet_reloads", "Model reloads by result", ["result"], registry=r)
        self.request_log_errors = Gauge(
            "infnet_request_log_errors", "Request log records that failed to write", registry=r
        )

        self.impressions = Gauge(
            "infnet_impressions",
            "Impression events appended to the event log, or dropped (queue full, log down at shutdown)",
            ["result"],
            registry=r,
        )
        self.label_events = Counter(
            "infnet_label_events", "Label callbacks appended to the event log", registry=r
        )

    def observe_batch(self, rows: int, requests: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)
        self.inference.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
