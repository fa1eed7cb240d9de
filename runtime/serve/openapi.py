"""The OpenAPI description of the routes: request bodies, parameters, answers and errors, with
examples; what /docs shows. The handlers read raw bodies and return ready JSON, so these dicts
are the schema: FastAPI infers nothing.
"""

from __future__ import annotations

from typing import Any

from runtime import collect as collecting
from runtime.contract import Contract

# x,y,w,h: x and y from 0, width and height from 1, at most 6 digits each. The schema documents it
# and runtime.serve.routes.parse_roi checks it, so the two agree on every string (ASCII digits only,
# no whitespace).
ROI_PATTERN = r"^[0-9]{1,6},[0-9]{1,6},[1-9][0-9]{0,5},[1-9][0-9]{0,5}$"


def description(contract: Contract) -> str:
    """The API's description at the top of /docs."""
    c = contract
    return (f"Classify photos and camera frames with the server's model ({len(c.labels)} labels, "
            f"{c.width}x{c.height} {c.color} input). Send image bytes (PNG, JPEG, BMP, WebP) with an "
            "image/* content type, or a multipart form with an `image` field.\n\n"
            "Photos are read as they are shown: JPEG (and phones' MPO) turned as their EXIF orientation "
            "says; transparent images (an alpha channel, a transparent palette or colour) composited on "
            "white. Each image is judged from its header before it is decoded: at most the server's "
            "pixel limit, no side more than 20 times the other, and smaller limits for the costly "
            "decoders (compressed BMP, WebP, progressive JPEG); a batch's images share a pixel budget. "
            "Uploads are decoded one at a time per worker process; when too many wait, 503 with "
            "Retry-After.")


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
    "saved": {"type": "string",
              "description": "LABEL/FILE.png (.jpg for a lossy upload), in the server's collect folder"},
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


def batch_answer_schema(answer: dict, max_batch: int) -> dict:
    """POST /v1/classify/batch's answer: ``answer`` (one image's) for each image, in order."""
    return {"type": "object", "required": ["results", "model", "latency_ms"], "properties": {
        "results": {"type": "array", "items": answer, "minItems": 1, "maxItems": max_batch},
        "model": MODEL_SCHEMA, "latency_ms": {"type": "number", "minimum": 0}}}


def ok(schema: dict, text: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": text, "content": {"application/json": {"schema": schema}}}}


ROI_PARAMETER = {"name": "roi", "in": "query", "schema": {"type": "string", "pattern": ROI_PATTERN},
                 "description": "x,y,w,h: where to look, in the uploaded image's pixels (as it is shown, EXIF "
                                "rotation applied): x and y from 0, width and height from 1"}


def top_k_parameter(max_top_k: int, default: int) -> dict:
    return {"name": "top_k", "in": "query", "description": "how many labels to return (at most the model's labels)",
            "schema": {"type": "integer", "minimum": 1, "maximum": max_top_k, "default": default}}
