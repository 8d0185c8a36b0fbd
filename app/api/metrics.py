"""Prometheus metrics, every one named agentcaps_…; one registry per app so tests can build many apps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "agentcaps_decisions",
            "Verify decisions by code (allowed or the denial code)",
            ["code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "agentcaps_verify_seconds",
            "Time to decide one /v1/verify call",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.store_errors = Counter(
            "agentcaps_store_errors", "Calls the counter store could not answer", registry=self.registry
        )
        self.spend = Counter(
            "agentcaps_spend",
            "Amount charged or held, by currency (in currency units)",
            ["currency"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
