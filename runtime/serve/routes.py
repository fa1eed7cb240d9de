"""The HTTP side: the routes, the bearer token, parsing the query, and the one place where the
service's refusals (``ServiceError``) become HTTP answers (``service_error``).

The route handlers (``classify``, ``classify_batch``, ``model_metadata``, and ``collect`` when the
server was started with --collect DIR) parse the query (``parse_top_k``, ``parse_roi``,
``parse_label``), read the upload (``runtime.serve.uploads.read_images``), hand the work to the
service's ``WorkQueue`` and return JSON. /v1 is behind ``authorize`` when a token is set.
"""

from __future__ import annotations

import functools
import hmac
import logging
import re
from pathlib import Path
from time import perf_counter
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.routing import Route

from runtime import collect as collecting
from runtime.roi import Roi
from runtime.serve import metrics
from runtime.serve.errors import Busy, ServiceError
from runtime.serve.openapi import (COLLECT_ANSWER, COLLECT_ERRORS, ERRORS, IMAGE_BODY, LABEL_PARAMETER, ROI_PARAMETER,
                                   ROI_PATTERN, UPLOAD_ERRORS, answer_schema, batch_answer_schema, batch_body, ok,
                                   top_k_parameter)
from runtime.serve.service import Service
from runtime.serve.uploads import read_images

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
ROI = re.compile(ROI_PATTERN)
BEARER = HTTPBearer(auto_error=False, description="required when the server was started with --token")


def add_routes(app: FastAPI, service: Service) -> None:
    # Without a token there is no dependency to solve at all on the hot path.
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorize)] if service.config.token else [],
                   responses=ERRORS)
    top_k = top_k_parameter(service.max_top_k, service.default_top_k)
    answer = answer_schema(service.contract.labels, service.max_top_k)
    batch_answer = batch_answer_schema(answer, service.config.max_batch)
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
    # The hot route, answered by a plain Starlette route ahead of its FastAPI one (which the schema is
    # made of): FastAPI's request machinery (dependencies, exit stack) took about 70 us of the 430 a request
    # cost in process (answers, errors and the token check are the same: tests/test_serve.py).
    app.router.routes.insert(0, Route("/v1/classify", classify_with_token if service.config.token else classify,
                                      methods=["POST"]))
    app.add_api_route("/healthz", healthz, methods=["GET"], summary="Liveness: the model is loaded")
    app.add_api_route("/metrics", prometheus_metrics, methods=["GET"], response_class=Response,
                      summary="Prometheus metrics of every worker")
    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(ServiceError, service_error)  # what the service refuses, raised under any route


async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
    """A refusal of the service (a bad upload, a full queue or folder, a full disk) -> its HTTP answer."""
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else None
    return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)


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


async def classify_with_token(request: Request) -> JSONResponse:
    """``classify`` behind the bearer token, as the /v1 router's dependency checks it."""
    await authorize(request, await BEARER(request))
    return await classify(request)


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
