"""The HTTP API and the web page: an ASGI app (FastAPI) around one Predictor per worker process.

FastAPI because the API is documented by its own OpenAPI schema at /docs (served without a
CDN by fastapi-offline); the handlers read raw bodies and return ready JSON responses, so
pydantic never sits in the hot path.

This module only assembles the app. The rooms, in the order a request meets them:

- ``add_middleware`` (here): the request guards of ``middleware.py`` (Host, cross-site posts,
  requests in progress), Prometheus counting and timing of every request (``metrics.py``), CORS
  when asked for. Before them, on the socket, the connection guards of ``guards.py``, in uvicorn's
  protocols (``protocols.py``).
- ``routes.py``: /v1 (behind ``authorize`` when a token is set), /healthz, /metrics, the page; it
  parses the query, reads the upload (``uploads.py``), hands the work to the service's queue and
  answers the service's refusals (``errors.py``) with their HTTP status. ``openapi.py``: the schema.
- ``work.py``: the ``WorkQueue``; decoding and inference never run on the event loop.
- ``service.py``: ``Service``, the model, its contract and the limits: decodes for the model
  (``images.py``), classifies, collects and shapes the answer. No HTTP in it: a test can call it
  directly.
- ``config.py``: ``ServeConfig``, handed to every worker process through the environment.
- ``memory.py``: the worker's heap (arrays reused between requests, given back after large images).
"""

from __future__ import annotations

import gc

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware

try:
    import cv2
except ImportError:  # the base install
    cv2 = None

from runtime.serve import metrics
from runtime.serve.config import ServeConfig
from runtime.serve.memory import reuse_freed_memory
from runtime.serve.middleware import ConcurrencyLimit, CrossSiteGuard, HostGuard
from runtime.serve.openapi import description
from runtime.serve.routes import add_routes, unexpected
from runtime.serve.service import Service


def make_app(config: ServeConfig) -> FastAPIOffline:
    """The whole ASGI app for ``config``: the model loaded once, routes, middleware."""
    service = Service(config)
    metrics.MODEL.labels(service.model["file"], service.model["version"]).set(1)
    app = FastAPIOffline(title="fashion-edge", version=service.info.version, description=description(service.contract))
    app.state.service = service
    add_routes(app, service)
    app.add_exception_handler(Exception, unexpected)
    add_middleware(app, config)
    return app


create_app = make_app  # the name the package has always exported


def app_from_env() -> FastAPIOffline:
    """uvicorn's factory in every worker process: the config comes from the parent's environment.

    What is alive once the app is made (the model, the libraries, the routes: several hundred
    thousand objects) lives as long as the process: ``gc.freeze`` takes it out of the cyclic
    collector's sight, whose full passes over it stalled every request in flight (measured with
    `wrk -c32`, 2 workers, the load test's small PNGs: p99 39-49 ms before, 16-24 ms after, the
    same throughput). Freed arrays stay on the heap for the next request (``memory.py``), and OpenCV
    uses as many threads as inference does: the worker processes are the parallelism."""
    config = ServeConfig.from_env()
    reuse_freed_memory()
    if cv2 is not None:
        cv2.setNumThreads(config.threads)
    app = make_app(config)
    gc.collect()
    gc.freeze()
    return app


def add_middleware(app: FastAPI, config: ServeConfig) -> None:
    """After the routes: the metrics label requests by the routes the app knows.

    A request meets them in this order (the last added is the outermost): metrics (counts every
    answer below), the Host check (400), the limit of requests in progress (503), CORS when asked
    for, the cross-site check (403 for another site's POST)."""
    known = set(app.openapi()["paths"]) | {"/", "/docs", "/redoc", "/openapi.json"}
    app.add_middleware(CrossSiteGuard, allowed_origins=config.cors_origins)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(ConcurrencyLimit, limit=config.max_concurrent)
    if config.allowed_hosts or config.allow_ip_hosts:
        app.add_middleware(HostGuard, hosts=config.allowed_hosts, any_ip=config.allow_ip_hosts)
    app.add_middleware(metrics.MetricsMiddleware, routes=known)
