"""Prometheus metrics, in a registry that belongs to one application.

prometheus-client's default registry is a process global; two servers in one process (tests,
the demo) would share and clash over it. Each app builds its own `Metrics`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.submissions = Counter(
            "flux_submissions", "Messages accepted, by outcome", ["outcome"], registry=r
        )
        self.refusals = Counter("flux_refusals", "Requests refused, by error code", ["code"], registry=r)  # fmt: skip
        self.submit_seconds = Histogram(
            "flux_submit_seconds",
            "Time to accept one message (parse to durable commit)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.sockets = Gauge("flux_ws_connections", "Authenticated WebSockets", registry=r)
        self.queue_depth = Gauge("flux_push_queue_depth", "Frames waiting in push queues", registry=r)  # fmt: skip
        self.pushed = Counter("flux_pushed_frames", "Frames pushed to WebSockets", registry=r)
        self.slow_closed = Counter(
            "flux_ws_slow_closed", "WebSockets closed because their queue overflowed", registry=r
        )
        self.expired = Counter("flux_expired_messages", "Messages soft-deleted by expiry", registry=r)  # fmt: skip

        self.outbound_queued = Gauge(
            "flux_outbound_queued", "Messages in the delivery queue, by destination",
            ["destination"], registry=r,
        )  # fmt: skip
        self.outbound = Counter(
            "flux_outbound_messages", "Queued messages settled, by result (delivered, "
            "bounced) and deferred batches", ["result"], registry=r,
        )  # fmt: skip

    def count_settled(self, lease: Any, settlement: Any) -> None:
        """DeliveryWorker.on_settled: what one attempt at a destination came to."""
        bounced = len({id(q) for q, _, _ in settlement.bounces})
        self.outbound.labels(result="delivered").inc(len(settlement.done) - bounced)
        self.outbound.labels(result="bounced").inc(bounced)
        if settlement.retry is not None:
            self.outbound.labels(result="deferred").inc()

    def queue_sizes(self, sizes: dict[str, int]) -> None:
        self.outbound_queued.clear()
        for destination, queued in sizes.items():
            self.outbound_queued.labels(destination=destination).set(queued)

    def refused(self, code: str) -> None:
        self.refusals.labels(code=code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
