"""The HTTP API and the web page: an ASGI app (FastAPI) around one Predictor per worker process.

FastAPI because the API is documented by its own OpenAPI schema at /docs (served without a
CDN by fastapi-offline); the handlers read raw bodies and return ready JSON responses, so
pydantic never sits in the hot path.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect

from runtime.predictor import Prediction, Predictor
from runtime.serve import metrics
from runtime.serve.images import BadImage, Decoded, decode

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
CONFIG_ENV = "FASHION_EDGE_SERVE_CONFIG"
INLINE_BYTES = 256 * 1024  # bodies above this are decoded in a thread, so the event loop keeps serving
ROI_PATTERN = r"^\d{1,6},\d{1,6},\d{1,6},\d{1,6}$"
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


def app_from_env():
    """uvicorn's factory in every worker process: the config comes from the parent's environment."""
    return create_app(ServeConfig.from_env())


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


def create_app(config: ServeConfig) -> FastAPIOffline:
    predictor = Predictor(config.model, num_threads=config.threads, spin=False)
    predict_lock = threading.Lock()  # one interpreter per worker: a thread-pool decode must not share it mid-call
    info = predictor.info
    model = {"file": predictor.model_path.name, "version": info.version}
    metrics.MODEL.labels(model["file"], model["version"]).set(1)

    app = FastAPIOffline(
        title="fashion-edge", version=info.version,
        description="Classify garment photos and camera frames with an int8 Fashion-MNIST model. "
                    "Send image bytes (PNG, JPEG, BMP, WebP) with an image/* content type, or a multipart "
                    "form with an `image` field.")

    async def authorize(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        given = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(given, config.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    # Without a token there is no dependency to solve at all on the hot path.
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorize)] if config.token else [], responses=ERRORS)
    max_top_k = len(info.labels)

    async def off_loop_if_large(size: int, work: Callable[[], T]) -> T:
        # Small images take well under a millisecond: a thread hop would cost more than it saves.
        return work() if size <= INLINE_BYTES else await anyio.to_thread.run_sync(work)

    def answer(prediction: Prediction, decoded: Decoded, top_k: int, started: float) -> dict:
        box = prediction.box
        if box is not None and decoded.scale != 1:
            box = tuple(round(v / decoded.scale) for v in box)
        metrics.PREDICTIONS.labels(prediction.label).inc()
        return {"label": prediction.label, "index": prediction.index, "confidence": round(prediction.confidence, 6),
                "top_k": [{"label": label, "confidence": round(p, 6)} for label, p in prediction.top_k(top_k)],
                "object_found": prediction.object_found, "box": box, "model": model,
                "latency_ms": round((perf_counter() - started) * 1000, 3)}

    @v1.post("/classify", summary="Classify one image",
             openapi_extra={**IMAGE_BODY, "parameters": [top_k_parameter(max_top_k), ROI_PARAMETER]})
    async def classify(request: Request):
        """One image as the body (image/png, image/jpeg, image/bmp, image/webp) or as the multipart field `image`.

        `object_found` is false when nothing stood out from the background; `box` is the object's
        x, y, w, h in the uploaded image."""
        top_k, roi = parse_top_k(request, max_top_k), parse_roi(request)
        images = await read_images(request, config, batch=False)
        started = perf_counter()

        def work() -> dict:
            decoded = decode_or_4xx(images[0], config.max_pixels)
            region = scaled_roi(roi, decoded.scale)
            with predict_lock:
                try:
                    prediction = predictor.predict(decoded.gray, region)
                except ValueError as e:  # e.g. a roi outside the image
                    raise HTTPException(422, str(e)) from None
            return answer(prediction, decoded, top_k, started)

        return JSONResponse(await off_loop_if_large(len(images[0]), work))

    @v1.post("/classify/batch", summary="Classify several images in one inference call",
             openapi_extra={**BATCH_BODY, "parameters": [top_k_parameter(max_top_k)]})
    async def classify_batch(request: Request):
        """A multipart form with several `image` fields (up to the server's --max-batch); answers in order."""
        top_k = parse_top_k(request, max_top_k)
        images = await read_images(request, config, batch=True)
        started = perf_counter()

        def work() -> dict:
            decoded = [decode_or_4xx(data, config.max_pixels, f"image {i + 1}: ") for i, data in enumerate(images)]
            with predict_lock:
                try:
                    predictions = predictor.predict_batch([d.gray for d in decoded])
                except ValueError as e:
                    raise HTTPException(422, str(e)) from None
            results = [answer(p, d, top_k, started) for p, d in zip(predictions, decoded)]
            return {"results": results, "model": model, "latency_ms": round((perf_counter() - started) * 1000, 3)}

        return JSONResponse(await off_loop_if_large(sum(map(len, images)), work))

    @v1.get("/model", summary="The model's embedded metadata")
    async def model_metadata():
        """Labels, input shape and range, quantization, version and the training run's test accuracy."""
        return {"file": predictor.model_path.name, **info.raw}

    app.include_router(v1)

    @app.get("/healthz", summary="Liveness: the model is loaded")
    async def healthz():
        return {"status": "ok", "model": model}

    @app.get("/metrics", summary="Prometheus metrics of every worker", response_class=Response)
    async def prometheus_metrics():
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (logged on the server)"}, status_code=500)

    known = set(app.openapi()["paths"]) | {"/", "/docs", "/redoc", "/openapi.json"}
    app.add_middleware(metrics.MetricsMiddleware, routes=known)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


def decode_or_4xx(data: bytes, max_pixels: int, prefix: str = "") -> Decoded:
    try:
        return decode(data, max_pixels)
    except BadImage as e:
        raise HTTPException(e.status, prefix + str(e)) from None


def top_k_parameter(max_top_k: int) -> dict:
    return {"name": "top_k", "in": "query", "description": "how many labels to return",
            "schema": {"type": "integer", "minimum": 1, "maximum": max_top_k, "default": 3}}


ROI_PARAMETER = {"name": "roi", "in": "query", "description": "x,y,w,h: where to look, in the image's pixels",
                 "schema": {"type": "string", "pattern": ROI_PATTERN}}


# Query parameters are parsed by hand, not by FastAPI's dependency machinery: it cost more
# than decoding and classifying a 28x28 PNG together.
def parse_top_k(request: Request, max_top_k: int) -> int:
    raw = request.query_params.get("top_k")
    if raw is None:
        return 3
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= max_top_k):
        raise HTTPException(422, f"top_k must be an integer from 1 to {max_top_k}, not {raw!r}")
    return int(raw)


def parse_roi(request: Request) -> tuple[int, int, int, int] | None:
    raw = request.query_params.get("roi")
    if raw is None:
        return None
    if not re.fullmatch(ROI_PATTERN, raw):
        raise HTTPException(422, f"roi must be x,y,w,h in pixels (four non-negative integers), not {raw!r}")
    x, y, w, h = (int(v) for v in raw.split(","))
    if w == 0 or h == 0:
        raise HTTPException(422, f"roi {raw!r} is empty: width and height must be at least 1")
    return x, y, w, h


def scaled_roi(roi: tuple[int, int, int, int] | None, scale: float) -> tuple[int, int, int, int] | None:
    if roi is None:
        return None
    x, y, w, h = roi
    if scale == 1:
        return x, y, w, h
    return round(x * scale), round(y * scale), max(1, round(w * scale)), max(1, round(h * scale))


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
