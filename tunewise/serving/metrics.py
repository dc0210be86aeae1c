"""The server's Prometheus metrics (`GET /metrics`), in a registry of each server's own.

A registry per app, not prometheus-client's global one, so two servers in one process (tests, a
benchmark) never count each other's requests.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tunewise_requests",
            "HTTP requests answered, by route and status code",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tunewise_request_seconds",
            "Time from a request's arrival to its answer",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inputs = Counter("tunewise_inputs", "Inputs predicted", registry=self.registry)
        self.batch_inputs = Histogram(
            "tunewise_batch_inputs",
            "Inputs per model call (requests batched together)",
            buckets=SIZE_BUCKETS,
            registry=self.registry,
        )
        self.batch_tokens = Histogram(
            "tunewise_batch_tokens", "Tokens per model call", buckets=TOKEN_BUCKETS, registry=self.registry
        )
        self.batch_seconds = Histogram(
            "tunewise_batch_seconds", "Time of one model call", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.queue_depth = Gauge(
            "tunewise_queue_inputs", "Inputs accepted and not yet answered", registry=self.registry
        )
        self.screen = Counter(
            "tunewise_screen_decisions",
            "The content screen's decisions on generated texts",
            ["decision"],
            registry=self.registry,
        )
        self.screen_reasons = Counter(
            "tunewise_screen_reasons",
            "Why the content screen flagged generated texts",
            ["reason"],
            registry=self.registry,
        )
        self.model_errors = Counter(
            "tunewise_model_errors", "Model calls that failed (answered 500)", registry=self.registry
        )

    def observe_batch(self, inputs: int, tokens: int, seconds: float) -> None:
        self.batch_inputs.observe(inputs)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)

    def observe_screen(self, counts: dict[str, Any]) -> None:
        """One model call's screen counts (serving.screen.count_verdicts)."""
        flagged, redacted, blocked = counts["flagged"], counts["redacted"], counts["blocked"]
        self.screen.labels("passed").inc(counts["screened"] - flagged)
        self.screen.labels("flagged").inc(flagged - redacted - blocked)
        self.screen.labels("redacted").inc(redacted)
        self.screen.labels("blocked").inc(blocked)
        for reason, count in counts["by_reason"].items():
            self.screen_reasons.labels(reason).inc(count)
