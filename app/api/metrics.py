"""Prometheus metrics, every one named agentcaps_…; one registry per app so tests can build many apps.

Under `serve --workers N` each worker is a process of its own and a scrape reaches whichever one the kernel
hands the connection: `serve` then points PROMETHEUS_MULTIPROC_DIR at a fresh directory, every worker's
metrics live in files there, and any worker renders the sum of all of them. agentcaps_spend is exact per
process (see Metrics.charged); across workers the collector adds one float per worker, the only rounding left.
"""

from __future__ import annotations

import math
import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own switch to multiprocess mode
# A token without budgets may be charged in any currency a caller makes up, and each label value is a series
# kept forever: the first MAX_CURRENCIES currencies a process charges keep their name, later ones are OTHER.
MAX_CURRENCIES = 32
OTHER = "other"  # never a currency: currencies are upper case


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
            "Amount newly charged by /v1/verify (mode charge, not a replay), by currency (in currency units; past "
            f"the first {MAX_CURRENCIES} currencies, '{OTHER}')",
            ["currency"],
            registry=self.registry,
        )
        self._spent: dict[str, tuple[int, float]] = {}  # label -> (exact micro-units, what the counter shows)
        self._decided: dict[str, Any] = {}  # code -> its child of `decisions` (_child)
        self._spend_of: dict[str, Any] = {}  # label -> its child of `spend`

    def decided(self, code: str) -> None:
        """Count one verify decision by its code ("allowed" or a denial code: a fixed set)."""
        _child(self.decisions, self._decided, code).inc()

    def charged(self, currency: str, micros: int) -> None:
        """Count one new charge. The total is kept exactly, in micro-units; the counter, a float by Prometheus'
        design, is stepped to the float nearest that total, so it never drifts as a sum of rounded amounts
        would (ten charges of 0.1 show 1.0, not 0.9999999999999999)."""
        label = currency if currency in self._spent or len(self._spent) < MAX_CURRENCIES else OTHER
        total, shown = self._spent.get(label, (0, 0.0))
        total += micros
        target = total / 1_000_000  # int / int rounds once, to the nearest float
        step = target - shown
        while shown + step < target:  # the counter adds `step` to `shown` in the same float arithmetic
            step = math.nextafter(step, math.inf)
        while shown + step > target:
            step = math.nextafter(step, -math.inf)
        _child(self.spend, self._spend_of, label).inc(step)
        self._spent[label] = (total, shown + step)

    def render(self) -> bytes:
        if os.environ.get(MULTIPROC_DIR):
            # A fresh registry: the collector reads every worker's files, this process's included.
            everyone = CollectorRegistry()
            MultiProcessCollector(everyone)  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped
            return generate_latest(everyone)
        return generate_latest(self.registry)


def _child(metric: Counter, children: dict[str, Any], label: str) -> Any:
    """`metric.labels(label)`, kept in `children`: labels() costs about a µs, and every verify counts."""
    child = children.get(label)
    if child is None:
        child = children[label] = metric.labels(label)
    return child
