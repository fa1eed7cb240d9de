"""The OpenAPI schema (/openapi.json) and the server agree: schemathesis generates requests from the
schema, valid and invalid, and runs every check on the answers (no 5xx; every status, content type,
header and body as documented; valid requests accepted, invalid ones refused), against the app
in-process, a bounded number of examples per operation.

Image bodies are real images of every accepted format (as a client sends them): what a
schema cannot say is whether some bytes are a decodable image. Likewise it cannot say that a
roi must fit inside the uploaded image, nor that a label must take at most 255 bytes in UTF-8 (a
folder name; the schema limits its characters): a valid request may get 422 for those reasons, and
for no other (``only_roi_outside_the_image``). POST /v1/collect is enabled (it saves into a
temporary folder), so it is tested too.
"""

import atexit
import io
import shutil
import tempfile

import numpy as np
import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402

from runtime.serve import ServeConfig, create_app  # noqa: E402

EXAMPLES = 40  # per operation (and per phase)
FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/bmp": "BMP", "image/webp": "WEBP"}


@st.composite
def images(draw, fmt: str) -> bytes:
    """A small image of ``fmt``: any size from 1x1, gray, colour or (where the format has it) with alpha."""
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    modes = ["L", "RGB"] + (["RGBA", "LA", "P"] if fmt in ("PNG", "WEBP") else [])
    mode = draw(st.sampled_from(modes))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


for media_type, fmt in FORMATS.items():  # bodies and multipart `image` parts of that type are real images
    schemathesis.openapi.media_type(media_type, images(fmt))

config = SchemathesisConfig.from_dict({
    # The one refusal of a valid request that a schema cannot express; only_roi_outside_the_image
    # makes sure that every 422 to a valid request is that one.
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "422"]}},
})
COLLECTED = tempfile.mkdtemp(prefix="schema-collect-")
atexit.register(shutil.rmtree, COLLECTED, ignore_errors=True)
app = create_app(ServeConfig(max_batch=4, max_bytes=2_000_000, collect=COLLECTED))
schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


@schemathesis.check
def only_roi_outside_the_image(ctx, response, case) -> bool | None:
    """A valid request (by the schema) answered 422: only because its roi falls outside the image (or its
    label, of at most 64 characters, takes more than 255 bytes in UTF-8)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    detail = response.json().get("detail", "")
    assert "does not fit inside" in detail or "bytes in UTF-8" in detail, f"a valid request was refused: {detail}"
    return None


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_the_server_does_what_its_schema_says(case):
    case.call_and_validate(additional_checks=[only_roi_outside_the_image])


def test_the_schema_says_what_the_server_refuses():
    """The findings that started this: a zero-sized roi and an empty batch are invalid by the schema
    itself, and every refusal a client can meet is documented, 503 with its Retry-After."""
    import re

    document = app.openapi()
    classify = document["paths"]["/v1/classify"]["post"]
    pattern = next(p for p in classify["parameters"] if p["name"] == "roi")["schema"]["pattern"]
    for roi in ("0,0,0,0", "0,0,5,0", "0,0,0,5", "-1,0,5,5", "1,2,3", " 1,2,3,4", "1,2,3,4\n", "1,2,3,1234567"):
        assert not re.search(pattern.replace("$", r"\Z"), roi), roi  # JSON Schema: "$" is the very end
    for roi in ("0,0,1,1", "10,20,640,480", "999999,999999,999999,999999"):
        assert re.search(pattern.replace("$", r"\Z"), roi), roi
    batch = document["paths"]["/v1/classify/batch"]["post"]
    items = batch["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["image"]
    assert items["minItems"] == 1 and items["maxItems"] == 4
    collect = document["paths"]["/v1/collect"]["post"]
    for operation in (classify, batch, collect):
        assert {"400", "401", "403", "408", "413", "415", "422", "503"} <= set(operation["responses"])
        assert "Retry-After" in operation["responses"]["503"]["headers"]
    assert {"201", "409", "507"} <= set(collect["responses"]) and "200" in classify["responses"]
    label = next(p for p in collect["parameters"] if p["name"] == "label")
    assert label["required"]
    pattern = label["schema"]["pattern"].replace("$", r"\Z")
    for bad in (".", "..", ".hidden", "a/b", "a\\b", " a", "a ", "a\n", "a\x00", "x" * 65):
        assert not re.search(pattern, bad), bad
    for good in ("red cup", "T-shirt", "Ärmel", "靴", "x" * 64, "a.b"):
        assert re.search(pattern, good), good
