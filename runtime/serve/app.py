"""The HTTP API and the web page: an ASGI app (FastAPI) around one Predictor per worker process.

FastAPI because the API is documented by its own OpenAPI schema at /docs (served without a
CDN by fastapi-offline); the handlers read raw bodies and return ready JSON responses, so
pydantic never sits in the hot path.

The pieces, in the order a request meets them:

- ``make_app(config)``: loads the model into a ``Service`` and assembles the app with
  ``add_routes`` and ``add_middleware``.
- ``add_middleware``: the guards of ``guards.py`` (Host, cross-site posts, requests in progress),
  Prometheus counting and timing of every request, CORS when asked for.
- ``add_routes``: /v1 (behind ``authorize`` when a token is set), /healthz, /metrics, the page.
- the route handlers (``classify``, ``classify_batch``, ``model_metadata``, and ``collect`` when the
  server was started with --collect DIR): parse the query
  (``parse_top_k``, ``parse_roi``), read the upload (``read_images``), hand the work to the
  service's ``WorkQueue``, return JSON.
- ``WorkQueue``: decoding and inference never run on the event loop: always in the worker
  process's one decoding thread, one request at a time, the others waiting in a bounded queue;
  when it is full, 503 with Retry-After at once. So concurrent uploads queue instead of
  multiplying memory, and /healthz and the other connections are served meanwhile.
- ``Service``: the model, its contract and the limits; decodes for the model (each image shrunk
  to the working size as it is decoded; a batch's pixels budgeted as a whole), classifies and
  shapes the answer. No routing in it: a test can call it directly.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import dataclasses
import functools
import gc
import hmac
import json
import logging
import os
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Annotated, Any, TypeVar

import anyio
import numpy as np
from PIL import Image
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect

try:
    import python_multipart
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import parse_options_header
except ModuleNotFoundError:  # pragma: no cover - python-multipart before 0.0.13
    import multipart as python_multipart
    from multipart.exceptions import FormParserError
    from multipart.multipart import parse_options_header

from runtime import collect as collecting
from runtime.files import atomic_path
from runtime.predictor import Prediction, Predictor, is_model_pixels
from runtime.preprocess import Prepared, prepare
from runtime.roi import Roi
from runtime.serve import metrics
from runtime.images import BadImage, Decoded, OverBudget, decode

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
CONFIG_ENV = "FASHION_EDGE_SERVE_CONFIG"
# x,y,w,h: x and y from 0, width and height from 1, at most 6 digits each. The schema documents it
# and parse_roi checks it, so the two agree on every string (ASCII digits only, no whitespace).
ROI_PATTERN = r"^[0-9]{1,6},[0-9]{1,6},[1-9][0-9]{0,5},[1-9][0-9]{0,5}$"
WORK_THREADS = 1  # decodes + inferences at once per worker process (one worker per core)
QUEUE_BODIES = 4  # requests waiting for the worker thread hold at most this many --max-bytes of bodies
READING_BODIES = 8  # bodies being read and waiting together: at most this many --max-bytes (503 beyond)
RETRY_AFTER = "1"  # seconds, with a 503
TRIM_PIXELS = 4_000_000  # after decoding this many pixels, give the freed memory back to the system
DEFAULT_TOP_K = 3  # or every label, for a model with fewer
ROI = re.compile(ROI_PATTERN)
T = TypeVar("T")
BEARER = HTTPBearer(auto_error=False, description="required when the server was started with --token")


@dataclass(frozen=True)
class ServeConfig:
    model: str | None = None  # None: the bundled int8 model
    token: str | None = None  # required as "Authorization: Bearer <token>" on /v1 when set
    token_file: str | None = None  # where workers read the token: then it is not in the environment
    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 16_000_000  # of the decoded image; a 12 MP phone photo passes
    max_batch: int = 32
    body_timeout: float = 10.0  # seconds a client may take to send its body
    threads: int = 1  # inference threads per worker process
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    # Host header values answered (DNS rebinding); empty and not allow_ip_hosts: not checked. The CLI
    # always sets them from --host and --allowed-host (runtime.serve.guards.allowed_hosts_for).
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)
    allow_ip_hosts: bool = False  # any IP-literal Host too (a 0.0.0.0 or :: bind)
    max_concurrent: int = 64  # requests in progress per worker; 503 beyond (/healthz always answered)
    # Read by the connection protocol (runtime.serve.guards), not the app:
    header_timeout: float = 10.0  # seconds to receive a request's line and headers
    max_header_bytes: int = 32 * 1024  # request line and headers; 431 beyond
    max_connections: int = 512  # open sockets per worker; the one idle longest is closed to make room
    # Pixels (as declared by the headers) that the images of one batch may add up to; None: 4 x max_pixels.
    max_batch_pixels: int | None = None
    # POST /v1/collect saves uploads as training images in collect/LABEL/ (None: no such route, 404)
    collect: str | None = None
    collect_max: int = 10_000  # images per label folder; 409 beyond
    collect_max_labels: int = 100  # label folders; 409 for a new label beyond

    def to_env(self) -> str:
        values = asdict(self)
        if self.token_file:  # each worker reads the file
            values["token"] = None
        return json.dumps(values)

    @classmethod
    def from_env(cls) -> ServeConfig:
        values = json.loads(os.environ.get(CONFIG_ENV, "{}"))
        values["cors_origins"] = tuple(values.get("cors_origins", ()))
        values["allowed_hosts"] = tuple(values.get("allowed_hosts", ()))
        if values.get("token_file"):
            from runtime.serve.guards import read_token_file

            values["token"] = read_token_file(values["token_file"])
        return cls(**values)


# --- the service: the model and what is done with an upload, without HTTP routing ----------------

class Service:
    """One worker's model (a Predictor, safe to share between threads, and its contract) and the
    server's limits.

    Methods raise HTTPException with the 4xx to answer for a bad upload; everything else is
    plain Python, so tests can call ``classify_bytes`` and friends without a client.
    """

    def __init__(self, config: ServeConfig, predictor: Predictor | None = None):
        self.config = config
        self.predictor = predictor or Predictor(config.model, num_threads=config.threads, spin=False)
        self.info = self.predictor.info
        self.contract = self.predictor.contract
        self.max_top_k = len(self.contract.labels)
        self.default_top_k = min(DEFAULT_TOP_K, self.max_top_k)
        self.model = {"file": self.predictor.model_path.name, "version": self.info.version}
        self.max_batch_pixels = config.max_batch_pixels or 4 * config.max_pixels
        # at most --max-concurrent requests wait (the same bound as the middleware's), within a body budget
        self.work = WorkQueue(WORK_THREADS, config.max_concurrent, QUEUE_BODIES * config.max_bytes)

    def metadata(self) -> dict:
        """GET /v1/model: the embedded metadata as it is, the file name, and the contract in one
        normalised shape whatever the metadata's format_version (what the web page reads)."""
        c = self.contract
        contract = {"labels": list(c.labels),
                    "input": {"height": c.height, "width": c.width, "channels": c.channels,
                              "range": list(c.value_range)},
                    "preprocessing": {"kind": c.preprocessing}}
        return {"file": self.model["file"], **self.info.raw, "contract": contract,
                "collect": self.config.collect is not None}

    def collect_bytes(self, data: bytes, label: str) -> dict:
        """One uploaded image -> a PNG in the collect folder's ``label`` sub-folder (the answer of
        POST /v1/collect). Decoded like an image to classify (the same limits, shrunk to the working
        size) but in colour, whatever the current model takes, since the folder may train a colour
        model; encoded again: the client's bytes are never stored as they are.

        Slow (decoding, encoding, the disk): call it in a worker thread (``WorkQueue.run``)."""
        root = Path(self.config.collect)
        folder = root / label
        try:
            count = collecting.count_images(folder)
            new_label = count == 0 and not folder.is_dir()
            labels = collecting.count_labels(root) if new_label else 0
        except OSError as e:  # an unreadable folder
            raise cannot_save(label, e) from None
        if count >= self.config.collect_max:
            raise HTTPException(409, f"{label!r} has {count:,} images, the most this server keeps per label "
                                     "(--collect-max)")
        if new_label and labels >= self.config.collect_max_labels:
            raise HTTPException(409, f"there are {labels:,} labels already, the most this server keeps "
                                     "(--collect-max-labels)")
        decoded = self.decode(data, channels=3)
        try:
            pixels = decoded.pixels[..., ::-1]  # BGR -> RGB
            image = Image.fromarray(np.ascontiguousarray(pixels))
            path = collecting.new_image_path(folder, label, count + 1, unique=True)
            with atomic_path(path) as tmp:
                image.save(tmp, "PNG")
            count = collecting.count_images(folder)
        except OSError as e:  # a full disk, a read-only folder, a file in the way
            raise cannot_save(label, e) from None
        finally:
            release_memory(decoded.declared_pixels)
        return {"saved": f"{label}/{path.name}", "label": label, "count": count}

    def decode(self, data: bytes, prefix: str = "", budget: int | None = None,
               channels: int | None = None) -> Decoded:
        """Image bytes -> the pixels the model's contract takes (gray or BGR, or ``channels``; at most
        about twice the working size); 4xx when unusable or too costly. ``budget``: the pixels a
        batch has left."""
        try:
            return decode(data, self.config.max_pixels, channels or self.contract.channels, budget)
        except OverBudget as e:
            raise HTTPException(413, f"{prefix}the batch's images add up to more than {self.max_batch_pixels:,} "
                                     f"pixels ({e})") from None
        except BadImage as e:
            raise HTTPException(e.status, prefix + str(e)) from None

    def classify_bytes(self, data: bytes, top_k: int, roi: Roi | None, started: float) -> dict:
        """One uploaded image -> the answer of POST /v1/classify (``roi`` in the upload's pixels).

        Slow (decoding, preprocessing): call it in a worker thread (``WorkQueue.run``)."""
        decoded = self.decode(data)
        try:
            region = decoded_region(roi, decoded)
            prediction = self.predictor.predict(decoded.pixels, region)
        except ValueError as e:  # a roi outside the image
            raise HTTPException(422, str(e)) from None
        finally:
            release_memory(decoded.declared_pixels)
        return self.answer(prediction, decoded, top_k, started)

    def classify_batch(self, images: list[bytes], top_k: int, started: float) -> dict:
        """Several uploaded images, one inference call -> the answer of POST /v1/classify/batch.

        The images' declared pixels may add up to ``max_batch_pixels``; each is decoded, shrunk and
        prepared for the model as it comes, so only model-sized arrays wait for the inference.
        Slow: call it in a worker thread (``WorkQueue.run``)."""
        budget, inputs = self.max_batch_pixels, []
        try:
            for i, data in enumerate(images):
                decoded = self.decode(data, f"image {i + 1}: ", budget)
                budget -= decoded.declared_pixels
                inputs.append(self.batch_input(decoded))
                del decoded
            try:
                predictions = self.predictor.predict_batch([pixels for pixels, _, _ in inputs])
            except ValueError as e:
                raise HTTPException(422, str(e)) from None
        finally:
            release_memory(self.max_batch_pixels - budget)
        results = [self.answer(with_prepared(p, prepared), decoded, top_k, started)
                   for p, (_, prepared, decoded) in zip(predictions, inputs)]
        return {"results": results, "model": self.model, "latency_ms": elapsed_ms(started)}

    def batch_input(self, decoded: Decoded) -> tuple[np.ndarray, Prepared | None, Decoded]:
        """What a batch keeps of one decoded image until the inference: pixels of the model's input
        size as they are, anything else prepared for the model now (and the decoded pixels dropped).

        A prepared image is of the model's size, so ``predict_batch`` only rescales it: given in
        OpenCV's BGR order (it swaps colour to the model's RGB), exactly the same model input."""
        if is_model_pixels(decoded.pixels, self.contract):
            return decoded.pixels, None, decoded
        prepared = prepare(decoded.pixels, self.contract)
        image = prepared.image if self.contract.channels == 1 else prepared.image[..., ::-1]
        return image, prepared, dataclasses.replace(decoded, pixels=np.empty((0, 0), np.uint8))

    def answer(self, prediction: Prediction, decoded: Decoded, top_k: int, started: float) -> dict:
        """One image's JSON answer; the box back in the uploaded image's pixels."""
        box = prediction.box
        if box is not None and decoded.scale != 1:
            width, height = decoded.size
            x, y, w, h = (round(v / decoded.scale) for v in box)
            x, y = min(x, width - 1), min(y, height - 1)
            box = (x, y, max(1, min(w, width - x)), max(1, min(h, height - y)))
        metrics.PREDICTIONS.labels(prediction.label).inc()
        return {"label": prediction.label, "index": prediction.index, "confidence": round(prediction.confidence, 6),
                "top_k": [{"label": label, "confidence": round(p, 6)} for label, p in prediction.top_k(top_k)],
                "object_found": prediction.object_found, "box": box, "model": self.model,
                "latency_ms": elapsed_ms(started)}


def cannot_save(label: str, error: OSError) -> HTTPException:
    """507 for a collected image the disk would not take (logged with the path; the answer names the label only)."""
    log.warning("cannot save a collected image of %r: %s", label, error)
    return HTTPException(507, f"cannot save the image under {label}/: {error.strerror or type(error).__name__}")


def with_prepared(prediction: Prediction, prepared: Prepared | None) -> Prediction:
    """A batch image's prediction with what its early preparation found (and where, in decoded pixels)."""
    if prepared is None:
        return prediction
    return dataclasses.replace(prediction, object_found=prepared.found, box=prepared.box)


class WorkQueue:
    """Runs the slow part of requests (decoding, preprocessing, inference) in ``threads`` worker
    threads of its own, first come first served. At most ``max_waiting`` more requests wait their
    turn, holding at most ``max_bytes`` of bodies between them (one request is always let in);
    beyond that, 503 with Retry-After at once.

    A plain queue and ``call_soon_threadsafe``: the hop costs about a third of anyio.to_thread's
    with a CapacityLimiter, which matters for 28x28 PNGs answered in well under a millisecond."""

    def __init__(self, threads: int, max_waiting: int, max_bytes: int):
        self.threads, self.max_waiting, self.max_bytes = threads, max_waiting, max_bytes
        self.pending = self.pending_bytes = 0  # running or waiting; changed on the event loop only
        self.reading = 0  # body bytes of uploads still arriving (read_body); on the event loop only
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.workers: list[threading.Thread] = []

    def check(self, size: int = 0) -> None:
        """503 when a request of ``size`` body bytes would not find room in the queue."""
        if self.pending and (self.pending >= self.threads + self.max_waiting
                             or self.pending_bytes + size > self.max_bytes):
            raise HTTPException(503, f"busy: {self.pending} requests are being decoded or waiting; try again shortly",
                                headers={"Retry-After": RETRY_AFTER})

    async def run(self, size: int, work: Callable[[], T]) -> T:
        """``work()`` in a worker thread when its turn comes; the event loop serves others meanwhile."""
        self.check(size)
        if not self.workers:  # started in the process (the uvicorn worker) that uses them
            self.workers = [threading.Thread(target=self._serve, name=f"decode-{i}", daemon=True)
                            for i in range(self.threads)]
            for worker in self.workers:
                worker.start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending += 1
        self.pending_bytes += size
        try:
            self.jobs.put((loop, future, work))
            return await future
        finally:
            self.pending -= 1
            self.pending_bytes -= size

    def _serve(self) -> None:
        while True:
            self._do(*self.jobs.get())  # a call, so that nothing of a request outlives it in this thread

    @staticmethod
    def _do(loop: asyncio.AbstractEventLoop, future: asyncio.Future, work: Callable[[], object]) -> None:
        if future.cancelled():  # its request is gone
            return
        try:
            outcome = (work(), None)
        except BaseException as e:  # handed to the request, which raises it
            outcome = (None, e)
        del work  # the request's bytes
        try:
            loop.call_soon_threadsafe(_settle, future, *outcome)
        except RuntimeError:  # the loop is closed (shutting down): nobody waits for the answer
            pass
        del future, outcome  # no cycle (error -> traceback -> this frame -> future -> error) keeps pixels alive


def _settle(future: asyncio.Future, result: object, error: BaseException | None) -> None:
    if not future.done():
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None elsewhere (musl, macOS, Windows)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_memory(pixels: int) -> None:
    """After decoding ``pixels`` (a large image or batch), give the freed heap back to the system:
    glibc keeps freed blocks of its arenas (a worker thread has its own) mapped otherwise."""
    if pixels >= TRIM_PIXELS and (trim := _malloc_trim()) is not None:
        trim(0)


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
                    "image/* content type, or a multipart form with an `image` field.\n\n"
                    "Photos are read as they are shown: JPEG (and phones' MPO) turned as their EXIF orientation "
                    "says; transparent images (an alpha channel, a transparent palette or colour) composited on "
                    "white. Each image is judged from its header before it is decoded: at most the server's "
                    "pixel limit, no side more than 20 times the other, and smaller limits for the costly "
                    "decoders (compressed BMP, WebP, progressive JPEG); a batch's images share a pixel budget. "
                    "Uploads are decoded one at a time per worker process; when too many wait, 503 with "
                    "Retry-After.")
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
    same throughput)."""
    app = make_app(ServeConfig.from_env())
    gc.collect()
    gc.freeze()
    return app


def add_routes(app: FastAPI, service: Service) -> None:
    # Without a token there is no dependency to solve at all on the hot path.
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorize)] if service.config.token else [],
                   responses=ERRORS)
    top_k = top_k_parameter(service.max_top_k, service.default_top_k)
    answer = answer_schema(service.contract.labels, service.max_top_k)
    batch_answer = {"type": "object", "required": ["results", "model", "latency_ms"], "properties": {
        "results": {"type": "array", "items": answer, "minItems": 1, "maxItems": service.config.max_batch},
        "model": MODEL_SCHEMA, "latency_ms": {"type": "number", "minimum": 0}}}
    v1.add_api_route("/classify", classify, methods=["POST"], summary="Classify one image",
                     responses={**ok(answer, "the image's labels"), **UPLOAD_ERRORS},
                     openapi_extra={**IMAGE_BODY, "parameters": [top_k, ROI_PARAMETER]})
    v1.add_api_route("/classify/batch", classify_batch, methods=["POST"],
                     summary="Classify several images in one inference call",
                     responses={**ok(batch_answer, "each image's labels, in order"), **UPLOAD_ERRORS},
                     openapi_extra={**batch_body(service.config.max_batch), "parameters": [top_k]})
    v1.add_api_route("/model", model_metadata, methods=["GET"], summary="The model's embedded metadata")
    if service.config.collect is not None:
        v1.add_api_route("/collect", collect, methods=["POST"], status_code=201,
                         summary="Save an image as a training image of a label",
                         responses={201: {"description": "saved", "content": {"application/json": {
                             "schema": COLLECT_ANSWER}}}, **COLLECT_ERRORS},
                         openapi_extra={**IMAGE_BODY, "parameters": [LABEL_PARAMETER]})
    app.include_router(v1)
    app.add_api_route("/healthz", healthz, methods=["GET"], summary="Liveness: the model is loaded")
    app.add_api_route("/metrics", prometheus_metrics, methods=["GET"], response_class=Response,
                      summary="Prometheus metrics of every worker")
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def add_middleware(app: FastAPI, config: ServeConfig) -> None:
    """After the routes: the metrics label requests by the routes the app knows.

    A request meets them in this order (the last added is the outermost): metrics (counts every
    answer below), the Host check (400), the limit of requests in progress (503), CORS when asked
    for, the cross-site check (403 for another site's POST)."""
    from runtime.serve import guards

    known = set(app.openapi()["paths"]) | {"/", "/docs", "/redoc", "/openapi.json"}
    app.add_middleware(guards.CrossSiteGuard, allowed_origins=config.cors_origins)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(guards.ConcurrencyLimit, limit=config.max_concurrent)
    if config.allowed_hosts or config.allow_ip_hosts:
        app.add_middleware(guards.HostGuard, hosts=config.allowed_hosts, any_ip=config.allow_ip_hosts)
    app.add_middleware(metrics.MetricsMiddleware, routes=known)


# --- route handlers: parse, call the service, return JSON -------------------------------------------

async def classify(request: Request) -> JSONResponse:
    """One image as the body (image/png, image/jpeg, image/bmp, image/webp) or as the multipart field `image`.

    `object_found` is false when nothing stood out from the background or the segmentation is
    not sound (the answer is then a best guess); `box` is the object's x, y, w, h in the
    uploaded image."""
    service: Service = request.app.state.service
    top_k, roi = parse_top_k(request, service), parse_roi(request)
    images = await read_images(request, service, batch=False)
    work = functools.partial(service.classify_bytes, images[0], top_k, roi, perf_counter())
    return JSONResponse(await service.work.run(len(images[0]), work))


async def classify_batch(request: Request) -> JSONResponse:
    """A multipart form with several `image` fields (up to the server's --max-batch); answers in order."""
    service: Service = request.app.state.service
    top_k = parse_top_k(request, service)
    images = await read_images(request, service, batch=True)
    work = functools.partial(service.classify_batch, images, top_k, perf_counter())
    return JSONResponse(await service.work.run(sum(map(len, images)), work))


async def collect(request: Request) -> JSONResponse:
    """Save one image (the body, or the multipart field `image`) as a training image of `label`: decoded like
    an image to classify, encoded again as PNG into the server's collect folder, LABEL/ (the layout
    `python -m train --data DIR` reads), under a name the server chooses. Only when the server was started
    with --collect DIR."""
    service: Service = request.app.state.service
    label = parse_label(request)
    images = await read_images(request, service, batch=False)
    work = functools.partial(service.collect_bytes, images[0], label)
    return JSONResponse(await service.work.run(len(images[0]), work), status_code=201)


async def model_metadata(request: Request) -> JSONResponse:
    """Labels, input shape and range, preprocessing, quantization, version and the training run's test accuracy
    as embedded in the model, plus `contract`: labels, input size, channels, range and preprocessing kind in
    one shape for every metadata version; `collect`: whether POST /v1/collect saves training images."""
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


# Query parameters are parsed by hand, not by FastAPI's dependency machinery: it cost more
# than decoding and classifying a 28x28 PNG together.
def parse_top_k(request: Request, service: Service) -> int:
    raw = request.query_params.get("top_k")
    if raw is None:
        return service.default_top_k
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= service.max_top_k):
        raise HTTPException(422, f"top_k must be an integer from 1 to {service.max_top_k}, not {raw!r}")
    return int(raw)


def parse_label(request: Request) -> str:
    raw = request.query_params.get("label")
    if raw is None:
        raise HTTPException(422, "label is required: the class the image shows (its folder's name)")
    try:
        return collecting.check_label(raw)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None


def parse_roi(request: Request) -> Roi | None:
    raw = request.query_params.get("roi")
    if raw is None:
        return None
    if not ROI.fullmatch(raw):  # exactly the schema's pattern
        try:
            Roi.parse(raw)  # its message says what is wrong, when it can tell
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        raise HTTPException(422, f"roi must be x,y,w,h in pixels: x and y from 0, width and height from 1, "
                                 f"at most 6 digits each, not {raw!r}")
    return Roi.parse(raw)


# --- the OpenAPI description -----------------------------------------------------------------------

IMAGE_TYPES = ("png", "jpeg", "bmp", "webp")
IMAGE_PART = {"contentType": ", ".join(f"image/{kind}" for kind in IMAGE_TYPES)}  # what an `image` part holds
IMAGE_BODY = {"requestBody": {"required": True, "content": {
    **{f"image/{kind}": {"schema": {"type": "string", "format": "binary"}} for kind in IMAGE_TYPES},
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                       "properties": {"image": {"type": "string", "format": "binary"}}},
                            "encoding": {"image": IMAGE_PART}},
}}}


def batch_body(max_batch: int) -> dict:
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {"image": {"type": "array", "items": {"type": "string", "format": "binary"},
                                 "minItems": 1, "maxItems": max_batch}}},
        "encoding": {"image": IMAGE_PART}}}}}


def error(text: str, **extra: Any) -> dict[str, Any]:
    return {"description": text, **extra, "content": {"application/json": {
        "schema": {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}},
        "example": {"detail": text}}}}


BUSY = error("busy: too many requests in progress or waiting to be decoded in this worker; retry after the "
             "Retry-After seconds",
             headers={"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}})
# Every /v1 route (the Host check of runtime.serve.guards answers 400 on any route).
ERRORS: dict[int | str, dict[str, Any]] = {
    400: error("a Host header this server does not answer; for uploads also: an empty, truncated or corrupt image, "
               "a malformed multipart body, an `image` field that is text, no `image` field, too many batch items"),
    401: error("missing or wrong bearer token (only when the server was started with a token)"),
    503: BUSY}
# The classify routes, besides.
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    403: error("a POST sent by another site's page (a cross-site request)"),
    408: error("the body took longer than the server's body timeout to arrive"),
    413: error("a body over the byte limit; an image over the pixel limit (checked from its header, before "
               "decoding); a compressed BMP, WebP or progressive JPEG over its own, smaller limit (what its "
               "decoder costs); a batch whose images add up to more than the batch's pixel limit"),
    415: error("not an image/* or multipart/form-data body, or not a PNG, JPEG (MPO), BMP or WebP image"),
    422: error("a malformed top_k or roi, a roi outside the image, or an image with one side more than 20 times "
               "the other"),
}


COLLECT_ERRORS: dict[int | str, dict[str, Any]] = {
    **UPLOAD_ERRORS,
    409: error("the label has as many images as the server keeps per label (--collect-max), or a new label "
               "beyond the number of labels it keeps (--collect-max-labels)"),
    422: error("a missing or bad label (" + collecting.LABEL_RULES + "; at most 255 bytes in UTF-8), or an "
               "image with one side more than 20 times the other"),
    507: error("the image cannot be saved: the disk is full, or the folder cannot be written"),
}
LABEL_PARAMETER = {"name": "label", "in": "query", "required": True,
                   "description": "the class the image shows: its folder's name (" + collecting.LABEL_RULES + ")",
                   "schema": {"type": "string", "minLength": 1, "maxLength": collecting.MAX_LABEL_CHARS,
                              "pattern": collecting.LABEL_PATTERN}}
COLLECT_ANSWER = {"type": "object", "required": ["saved", "label", "count"], "properties": {
    "saved": {"type": "string", "description": "LABEL/FILE.png, in the server's collect folder"},
    "label": {"type": "string"},
    "count": {"type": "integer", "minimum": 1, "description": "the label's images now"}}}


def answer_schema(labels: tuple[str, ...], max_top_k: int) -> dict:
    label = {"type": "string", "enum": list(labels)}
    probability = {"type": "number", "minimum": 0, "maximum": 1}
    return {"type": "object", "required": ["label", "index", "confidence", "top_k", "object_found", "box", "model",
                                           "latency_ms"],
            "properties": {
                "label": label, "index": {"type": "integer", "minimum": 0, "maximum": len(labels) - 1},
                "confidence": probability,
                "top_k": {"type": "array", "minItems": 1, "maxItems": max_top_k, "items": {
                    "type": "object", "required": ["label", "confidence"],
                    "properties": {"label": label, "confidence": probability}}},
                "object_found": {"type": "boolean", "description": "false: nothing stood out from the background, "
                                                "or the segmentation is not sound (a best guess)"},
                "box": {"type": ["array", "null"], "items": {"type": "integer", "minimum": 0}, "minItems": 4,
                        "maxItems": 4, "description": "x, y, w, h of the object in the uploaded image's pixels"},
                "model": MODEL_SCHEMA, "latency_ms": {"type": "number", "minimum": 0}}}


MODEL_SCHEMA = {"type": "object", "required": ["file", "version"],
                "properties": {"file": {"type": "string"}, "version": {"type": ["string", "null"]}}}


def ok(schema: dict, text: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": text, "content": {"application/json": {"schema": schema}}}}


ROI_PARAMETER = {"name": "roi", "in": "query", "schema": {"type": "string", "pattern": ROI_PATTERN},
                 "description": "x,y,w,h: where to look, in the uploaded image's pixels (as it is shown, EXIF "
                                "rotation applied): x and y from 0, width and height from 1"}


def top_k_parameter(max_top_k: int, default: int) -> dict:
    return {"name": "top_k", "in": "query", "description": "how many labels to return (at most the model's labels)",
            "schema": {"type": "integer", "minimum": 1, "maximum": max_top_k, "default": default}}


# --- reading the upload ----------------------------------------------------------------------------

async def read_images(request: Request, service: Service, batch: bool) -> list[bytes]:
    """The uploaded image bytes: the body itself (image/*) or the multipart `image` fields."""
    config = service.config
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (kind.startswith("image/") or kind == "multipart/form-data") or (batch and kind != "multipart/form-data"):
        expected = "multipart/form-data" if batch else "an image/* content type or multipart/form-data"
        raise HTTPException(415, f"content type {kind or 'missing'!r}: send {expected} "
                                 "(with `image` fields for multipart)")
    service.work.check()  # a full queue: 503 before the body is even read
    body = await read_body(request, config, service.work, READING_BODIES * config.max_bytes)
    if kind.startswith("image/"):
        return [body]
    images = multipart_images(request.headers["content-type"], body, config.max_batch if batch else 1)
    if not images:
        raise HTTPException(400, "the multipart form has no `image` field")
    return images


async def read_body(request: Request, config: ServeConfig, work: WorkQueue, budget: int) -> bytes:
    """The body, counted as it arrives against --max-bytes and, with every other upload of this
    worker still arriving or waiting for the work thread, against ``budget`` (503 beyond): many
    slow uploads at once cannot hold more memory than that."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > config.max_bytes:
        raise HTTPException(413, f"body of {int(declared):,} bytes; the limit is {config.max_bytes:,}")
    chunks, size = [], 0
    try:
        with anyio.fail_after(config.body_timeout):
            async for chunk in request.stream():  # chunked uploads are counted as they come
                size += len(chunk)
                work.reading += len(chunk)
                if size > config.max_bytes:
                    raise HTTPException(413, f"body over the limit of {config.max_bytes:,} bytes")
                if work.reading + work.pending_bytes > budget:
                    raise HTTPException(503, "busy: too many uploads arriving at once; try again shortly",
                                        headers={"Retry-After": RETRY_AFTER})
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPException(408, f"the body did not arrive within {config.body_timeout:g} s") from None
    except ClientDisconnect:  # nobody will read the answer; counted as a 400, not logged as a crash
        raise HTTPException(400, "the client went away before sending the whole body") from None
    finally:
        work.reading -= size
    return b"".join(chunks)


MAX_FIELDS = 16  # form fields besides the images, ignored


class Part:
    """One part of a multipart body: its headers (lower-case names) and its bytes."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.data = bytearray()

    @property
    def name(self) -> str | None:
        name = parse_options_header(self.headers.get(b"content-disposition", b""))[1].get(b"name")
        return None if name is None else name.decode("utf-8", "replace")

    @property
    def is_file(self) -> bool:
        """Sent as a file: with a file name, or with a content type other than text (a browser sends a
        text field without either; some clients send a file without a name)."""
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        kind = self.headers.get(b"content-type", b"").strip().lower()
        return b"filename" in options or (bool(kind) and not kind.startswith(b"text/"))


def multipart_images(content_type: str, body: bytes, max_images: int) -> list[bytes]:
    """The bytes of the multipart body's `image` parts, in order (python-multipart's streaming parser:
    every part in memory as it is, the body being in memory already; no temporary files)."""
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise HTTPException(400, "malformed multipart body: no boundary in the content type")
    parts: list[Part] = []
    header = [b"", b""]

    def begin() -> None:
        if len(parts) >= max_images + MAX_FIELDS:
            raise HTTPException(400, f"malformed multipart body: more than {max_images + MAX_FIELDS} parts")
        parts.append(Part())

    def header_end() -> None:
        parts[-1].headers[header[0].strip().lower()] = header[1].strip()
        header[:] = [b"", b""]

    def headers_done() -> None:
        part = parts[-1]
        if part.name is None:
            raise HTTPException(400, 'malformed multipart body: a part without a Content-Disposition "name"')
        if part.name == "image" and sum(p.name == "image" for p in parts) > max_images:
            raise HTTPException(400, f"too many images: at most {max_images} per request")

    callbacks = {"on_part_begin": begin,
                 "on_header_field": lambda data, start, end: header.__setitem__(0, header[0] + data[start:end]),
                 "on_header_value": lambda data, start, end: header.__setitem__(1, header[1] + data[start:end]),
                 "on_header_end": header_end, "on_headers_finished": headers_done,
                 "on_part_data": lambda data, start, end: parts[-1].data.extend(data[start:end])}
    try:
        parser = python_multipart.MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except FormParserError as e:
        raise HTTPException(400, f"malformed multipart body: {e}") from None
    images = []
    for part in parts:
        if part.name == "image":
            if not part.is_file:
                raise HTTPException(400, "the `image` field must be a file, not text")
            images.append(bytes(part.data))
            part.data = bytearray()
    return images
