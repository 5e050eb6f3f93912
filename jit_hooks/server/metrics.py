"""Prometheus metrics, one registry per app (so several apps can live in one process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http = Counter(
            "jit_http_responses",
            "HTTP responses by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.hook_decisions = Counter(
            "jit_hook_decisions",
            "Hook answers by hook and decision",
            ["hook", "decision"],
            registry=self.registry,
        )
        # Logins are counted from the account hook only: sshd calls the
        # authorized-keys hook several times per login.
        self.logins = Counter(
            "jit_logins", "Account-phase login decisions", ["decision"], registry=self.registry
        )
        self.request_events = Counter(
            "jit_request_events", "Request lifecycle events", ["event"], registry=self.registry
        )
        self.hook_latency = Histogram(
            "jit_hook_seconds",
            "Time to answer a hook call",
            ["hook"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        # Notifications (server/notify/): gauges set by every replica's worker round.
        self.notify_depth = Gauge(
            "jit_notify_outbox_depth", "Notifications not yet delivered", registry=self.registry
        )
        self.notify_oldest = Gauge(
            "jit_notify_oldest_undelivered_seconds",
            "Age of the oldest undelivered notification",
            registry=self.registry,
        )
        self.notify_attempts = Counter(
            "jit_notify_attempts",
            "Delivery attempts by channel and outcome (delivered, retry, failed)",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: the hook path asks for it on every call."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found
