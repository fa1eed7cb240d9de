"""Prometheus metrics, shared by every worker process through prometheus-client's multiprocess mode."""

from __future__ import annotations

import os
from time import perf_counter

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)

REQUESTS = Counter("fashion_edge_requests", "HTTP requests by route and status", ["route", "status"])
LATENCY = Histogram("fashion_edge_request_duration_seconds", "Time from request to response, by route", ["route"],
                    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0))
PREDICTIONS = Counter("fashion_edge_predictions", "Classified images by predicted label", ["label"])
MODEL = Gauge("fashion_edge_model_info", "The model this server answers with", ["file", "version"],
              multiprocess_mode="max")
CONTENT_TYPE = CONTENT_TYPE_LATEST


def exposition() -> bytes:
    """All workers' metrics when they share a PROMETHEUS_MULTIPROC_DIR, else this process's."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


class MetricsMiddleware:
    """Counts every HTTP request (404s and 405s too) by route and status, and times it.

    Unknown paths share the route label "other", so a scanner cannot grow the label set.
    """

    def __init__(self, app, routes: set[str]):
        self.app = app
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = perf_counter()
        status = 500

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"
            REQUESTS.labels(route, str(status)).inc()
            LATENCY.labels(route).observe(perf_counter() - started)
