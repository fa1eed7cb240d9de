"""The HTTP API and the web page: an ASGI app (FastAPI) around one Predictor per worker process.

FastAPI because the API is documented by its own OpenAPI schema at /docs (served without a
CDN by fastapi-offline); the handlers read raw bodies and return ready JSON responses, so
pydantic never sits in the hot path.

The pieces, in the order a request meets them:

- ``make_app(config)``: loads the model into a ``Service`` and assembles the app with
  ``add_routes`` and ``add_middleware``.
- ``add_middleware``: Prometheus counting and timing of every request, CORS when asked for.
- ``add_routes``: /v1 (behind ``authorize`` when a token is set), /healthz, /metrics, the page.
- the route handlers (``classify``, ``classify_batch``, ``model_metadata``): parse the query
  (``parse_top_k``, ``parse_roi``), read the upload (``read_images``), call the service,
  return JSON.
- ``Service``: the model, its contract and the limits; decodes for the model, classifies
  and shapes the answer. No routing in it: a test can call it directly.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect

from runtime.predictor import Prediction, Predictor
from runtime.roi import Roi
from runtime.serve import metrics
from runtime.serve.images import BadImage, Decoded, decode

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
CONFIG_ENV = "FASHION_EDGE_SERVE_CONFIG"
INLINE_BYTES = 256 * 1024  # bodies above this are decoded in a thread, so the event loop keeps serving
ROI_PATTERN = r"^\d{1,6},\d{1,6},\d{1,6},\d{1,6}$"  # documents the roi parameter; Roi.parse checks it
DEFAULT_TOP_K = 3  # or every label, for a model with fewer
T = TypeVar("T")
BEARER = HTTPBearer(auto_error=False, description="required when the server was started with --token")


@dataclass(frozen=True)
class ServeConfig:
    model: str | None = None  # None: the bundled int8 model
    token: str | None = None  # required as "Authorization: Bearer <token>" on /v1 when set
    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 16_000_000  # of the decoded image; a 12 MP phone photo passes
    max_batch: int = 32
    body_timeout: float = 10.0  # seconds a client may take to send its body
    threads: int = 1  # inference threads per worker process
    cors_origins: tuple[str, ...] = field(default_factory=tuple)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        values = json.loads(os.environ.get(CONFIG_ENV, "{}"))
        values["cors_origins"] = tuple(values.get("cors_origins", ()))
        return cls(**values)


# --- the service: the model and what is done with an upload, without HTTP routing ----------------

class Service:
    """One worker's model (a Predictor, its contract and a lock) and the server's limits.

    Methods raise HTTPException with the 4xx to answer for a bad upload; everything else is
    plain Python, so tests can call ``classify_bytes`` and friends without a client.
    """

    def __init__(self, config: ServeConfig, predictor: Predictor | None = None):
        self.config = config
        self.predictor = predictor or Predictor(config.model, num_threads=config.threads, spin=False)
        # one interpreter per worker: a thread-pool decode must not share it mid-call
        self.lock = threading.Lock()
        self.info = self.predictor.info
        self.contract = self.predictor.contract
        self.max_top_k = len(self.contract.labels)
        self.default_top_k = min(DEFAULT_TOP_K, self.max_top_k)
        self.model = {"file": self.predictor.model_path.name, "version": self.info.version}

    def metadata(self) -> dict:
        """GET /v1/model: the embedded metadata as it is, the file name, and the contract in one
        normalised shape whatever the metadata's format_version (what the web page reads)."""
        c = self.contract
        contract = {"labels": list(c.labels),
                    "input": {"height": c.height, "width": c.width, "channels": c.channels,
                              "range": list(c.value_range)},
                    "preprocessing": {"kind": c.preprocessing}}
        return {"file": self.model["file"], **self.info.raw, "contract": contract}

    def decode(self, data: bytes, prefix: str = "") -> Decoded:
        """Image bytes -> the pixels the model's contract takes (gray or BGR); 4xx when unusable."""
        try:
            return decode(data, self.config.max_pixels, self.contract.channels)
        except BadImage as e:
            raise HTTPException(e.status, prefix + str(e)) from None

    def classify_bytes(self, data: bytes, top_k: int, roi: Roi | None, started: float) -> dict:
        """One uploaded image -> the answer of POST /v1/classify (``roi`` in the upload's pixels)."""
        decoded = self.decode(data)
        try:
            region = decoded_region(roi, decoded)
            with self.lock:
                prediction = self.predictor.predict(decoded.pixels, region)
        except ValueError as e:  # a roi outside the image
            raise HTTPException(422, str(e)) from None
        return self.answer(prediction, decoded, top_k, started)

    def classify_batch(self, images: list[bytes], top_k: int, started: float) -> dict:
        """Several uploaded images, one inference call -> the answer of POST /v1/classify/batch."""
        decoded = [self.decode(data, f"image {i + 1}: ") for i, data in enumerate(images)]
        try:
            with self.lock:
                predictions = self.predictor.predict_batch([d.pixels for d in decoded])
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        results = [self.answer(p, d, top_k, started) for p, d in zip(predictions, decoded)]
        return {"results": results, "model": self.model, "latency_ms": elapsed_ms(started)}

    def answer(self, prediction: Prediction, decoded: Decoded, top_k: int, started: float) -> dict:
        """One image's JSON answer; the box back in the uploaded image's pixels."""
        box = prediction.box
        if box is not None and decoded.scale != 1:
            box = tuple(round(v / decoded.scale) for v in box)
        metrics.PREDICTIONS.labels(prediction.label).inc()
        return {"label": prediction.label, "index": prediction.index, "confidence": round(prediction.confidence, 6),
                "top_k": [{"label": label, "confidence": round(p, 6)} for label, p in prediction.top_k(top_k)],
                "object_found": prediction.object_found, "box": box, "model": self.model,
                "latency_ms": elapsed_ms(started)}


def decoded_region(roi: Roi | None, decoded: Decoded) -> Roi | None:
    """A roi in the uploaded image's pixels -> the same region in the decoded pixels.

    Checked against the upload's own size (so the message speaks in the user's pixels), then
    scaled; clipped, so rounding at a downscaled JPEG's edge cannot push it out."""
    if roi is None:
        return None
    height, width = decoded.pixels.shape[:2]
    return roi.check_inside(*decoded.size).scaled(decoded.scale).clipped(width, height)


def elapsed_ms(started: float) -> float:
    return round((perf_counter() - started) * 1000, 3)


# --- the app ---------------------------------------------------------------------------------------

def make_app(config: ServeConfig) -> FastAPIOffline:
    """The whole ASGI app for ``config``: the model loaded once, routes, middleware."""
    service = Service(config)
    metrics.MODEL.labels(service.model["file"], service.model["version"]).set(1)
    c = service.contract
    app = FastAPIOffline(
        title="fashion-edge", version=service.info.version,
        description=f"Classify photos and camera frames with the server's model ({len(c.labels)} labels, "
                    f"{c.width}x{c.height} {c.color} input). Send image bytes (PNG, JPEG, BMP, WebP) with an "
                    "image/* content type, or a multipart form with an `image` field.")
    app.state.service = service
    add_routes(app, service)
    app.add_exception_handler(Exception, unexpected)
    add_middleware(app, config)
    return app


create_app = make_app  # the name the package has always exported


def app_from_env() -> FastAPIOffline:
    """uvicorn's factory in every worker process: the config comes from the parent's environment."""
    return make_app(ServeConfig.from_env())


def add_routes(app: FastAPI, service: Service) -> None:
    # Without a token there is no dependency to solve at all on the hot path.
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorize)] if service.config.token else [],
                   responses=ERRORS)
    top_k = top_k_parameter(service.max_top_k, service.default_top_k)
    v1.add_api_route("/classify", classify, methods=["POST"], summary="Classify one image",
                     openapi_extra={**IMAGE_BODY, "parameters": [top_k, ROI_PARAMETER]})
    v1.add_api_route("/classify/batch", classify_batch, methods=["POST"],
                     summary="Classify several images in one inference call",
                     openapi_extra={**BATCH_BODY, "parameters": [top_k]})
    v1.add_api_route("/model", model_metadata, methods=["GET"], summary="The model's embedded metadata")
    app.include_router(v1)
    app.add_api_route("/healthz", healthz, methods=["GET"], summary="Liveness: the model is loaded")
    app.add_api_route("/metrics", prometheus_metrics, methods=["GET"], response_class=Response,
                      summary="Prometheus metrics of every worker")
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def add_middleware(app: FastAPI, config: ServeConfig) -> None:
    """After the routes: the metrics label requests by the routes the app knows."""
    known = set(app.openapi()["paths"]) | {"/", "/docs", "/redoc", "/openapi.json"}
    app.add_middleware(metrics.MetricsMiddleware, routes=known)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])


# --- route handlers: parse, call the service, return JSON -------------------------------------------

async def classify(request: Request) -> JSONResponse:
    """One image as the body (image/png, image/jpeg, image/bmp, image/webp) or as the multipart field `image`.

    `object_found` is false when nothing stood out from the background; `box` is the object's
    x, y, w, h in the uploaded image."""
    service: Service = request.app.state.service
    top_k, roi = parse_top_k(request, service), parse_roi(request)
    images = await read_images(request, service.config, batch=False)
    work = functools.partial(service.classify_bytes, images[0], top_k, roi, perf_counter())
    return JSONResponse(await off_loop_if_large(len(images[0]), work))


async def classify_batch(request: Request) -> JSONResponse:
    """A multipart form with several `image` fields (up to the server's --max-batch); answers in order."""
    service: Service = request.app.state.service
    top_k = parse_top_k(request, service)
    images = await read_images(request, service.config, batch=True)
    work = functools.partial(service.classify_batch, images, top_k, perf_counter())
    return JSONResponse(await off_loop_if_large(sum(map(len, images)), work))


async def model_metadata(request: Request) -> JSONResponse:
    """Labels, input shape and range, preprocessing, quantization, version and the training run's test accuracy
    as embedded in the model, plus `contract`: labels, input size, channels, range and preprocessing kind in
    one shape for every metadata version."""
    return JSONResponse(request.app.state.service.metadata())


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "model": request.app.state.service.model})


async def prometheus_metrics() -> Response:
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)


async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


async def authorize(request: Request,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
    given = credentials.credentials.encode() if credentials else b""
    if not hmac.compare_digest(given, request.app.state.service.config.token.encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error (logged on the server)"}, status_code=500)


async def off_loop_if_large(size: int, work: Callable[[], T]) -> T:
    # Small images take well under a millisecond: a thread hop would cost more than it saves.
    return work() if size <= INLINE_BYTES else await anyio.to_thread.run_sync(work)


# Query parameters are parsed by hand, not by FastAPI's dependency machinery: it cost more
# than decoding and classifying a 28x28 PNG together.
def parse_top_k(request: Request, service: Service) -> int:
    raw = request.query_params.get("top_k")
    if raw is None:
        return service.default_top_k
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= service.max_top_k):
        raise HTTPException(422, f"top_k must be an integer from 1 to {service.max_top_k}, not {raw!r}")
    return int(raw)


def parse_roi(request: Request) -> Roi | None:
    raw = request.query_params.get("roi")
    if raw is None:
        return None
    try:
        return Roi.parse(raw)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None


# --- the OpenAPI description -----------------------------------------------------------------------

IMAGE_BODY = {"requestBody": {"required": True, "content": {
    **{f"image/{kind}": {"schema": {"type": "string", "format": "binary"}} for kind in ("png", "jpeg", "bmp", "webp")},
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                       "properties": {"image": {"type": "string", "format": "binary"}}}},
}}}
BATCH_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"],
    "properties": {"image": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"example": {"detail": text}}}}
    for code, text in [(400, "empty, truncated or corrupt image, malformed multipart, too many batch items"),
                       (401, "missing or wrong bearer token"),
                       (408, "the body took longer than the server's timeout to arrive"),
                       (413, "body larger than the byte limit, or image larger than the pixel limit"),
                       (415, "not an image/* or multipart/form-data body, or not a PNG, JPEG, BMP or WebP"),
                       (422, "malformed top_k or roi, or a roi outside the image")]}
ROI_PARAMETER = {"name": "roi", "in": "query", "description": "x,y,w,h: where to look, in the image's pixels",
                 "schema": {"type": "string", "pattern": ROI_PATTERN}}


def top_k_parameter(max_top_k: int, default: int) -> dict:
    return {"name": "top_k", "in": "query", "description": "how many labels to return (at most the model's labels)",
            "schema": {"type": "integer", "minimum": 1, "maximum": max_top_k, "default": default}}


# --- reading the upload ----------------------------------------------------------------------------

async def read_images(request: Request, config: ServeConfig, batch: bool) -> list[bytes]:
    """The uploaded image bytes: the body itself (image/*) or the multipart `image` fields."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (kind.startswith("image/") or kind == "multipart/form-data") or (batch and kind != "multipart/form-data"):
        expected = "multipart/form-data" if batch else "an image/* content type or multipart/form-data"
        raise HTTPException(415, f"content type {kind or 'missing'!r}: send {expected} "
                                 "(with `image` fields for multipart)")
    body = await read_body(request, config)
    if kind.startswith("image/"):
        return [body]
    images = await multipart_images(request, body, config.max_batch if batch else 1)
    if not images:
        raise HTTPException(400, "the multipart form has no `image` field")
    return images


async def read_body(request: Request, config: ServeConfig) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > config.max_bytes:
        raise HTTPException(413, f"body of {int(declared):,} bytes; the limit is {config.max_bytes:,}")
    chunks, size = [], 0
    try:
        with anyio.fail_after(config.body_timeout):
            async for chunk in request.stream():  # chunked uploads are counted as they come
                size += len(chunk)
                if size > config.max_bytes:
                    raise HTTPException(413, f"body over the limit of {config.max_bytes:,} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPException(408, f"the body did not arrive within {config.body_timeout:g} s") from None
    except ClientDisconnect:  # nobody will read the answer; counted as a 400, not logged as a crash
        raise HTTPException(400, "the client went away before sending the whole body") from None
    return b"".join(chunks)


async def multipart_images(request: Request, body: bytes, max_images: int) -> list[bytes]:
    async def stream() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=max_images, max_fields=16).parse()
    except MultiPartException as e:
        detail = f"too many images: at most {max_images} per request" if "files" in e.message.lower() else e.message
        raise HTTPException(400, f"malformed multipart body: {detail}") from None
    images = []
    for value in form.getlist("image"):
        if isinstance(value, str):
            raise HTTPException(400, "the `image` field must be a file, not text")
        images.append(await value.read())
    await form.close()
    if len(images) > max_images:
        raise HTTPException(400, f"too many images: at most {max_images} per request")
    return images
