"""Prometheus metrics, shared by every worker process through prometheus-client's multiprocess mode.

prometheus-client decides once, when it is first imported, where metric values live: in files
under ``PROMETHEUS_MULTIPROC_DIR`` if that variable is set then, else in the process's memory.
``exposition`` follows that decision (not the variable's value now), so /metrics has every
counter however the process came to import it: one worker serving in the process that parsed
the command line (values in memory), or several workers started with the directory set.
"""

from __future__ import annotations

from time import perf_counter

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest, multiprocess, values)

disable_created_metrics()  # no *_created series: several workers' exposition has none either

REQUESTS = Counter("fashion_edge_requests", "HTTP requests by route and status", ["route", "status"])
LATENCY = Histogram("fashion_edge_request_duration_seconds", "Time from request to response, by route", ["route"],
                    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0))
PREDICTIONS = Counter("fashion_edge_predictions", "Classified images by predicted label", ["label"])
MODEL = Gauge("fashion_edge_model_info", "The model this server answers with", ["file", "version"],
              multiprocess_mode="max")
REFUSED = Counter("fashion_edge_refused_connections", "Connections closed before a request reached the app, "
                  "by reason: header_timeout, header_too_large, evicted (idle, to make room), connection_limit",
                  ["reason"])
CONTENT_TYPE = CONTENT_TYPE_LATEST


def shared() -> bool:
    """Whether metric values live in PROMETHEUS_MULTIPROC_DIR files, summed over worker processes,
    rather than in this process's memory (fixed when prometheus-client was imported)."""
    return values.ValueClass is not values.MutexValue


def exposition() -> bytes:
    """All workers' metrics when their values live in the shared directory, else this process's."""
    if not shared():
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
