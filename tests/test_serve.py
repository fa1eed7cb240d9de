"""The HTTP API: answers, every kind of bad request (4xx, never 5xx), security defaults, metrics,
models of other contracts (colour, any size, any number of labels), and a real multi-worker
uvicorn server (decompression bomb, slow client)."""

import os
import pickle
import re
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi")
cv2 = pytest.importorskip("cv2")
from fastapi.testclient import TestClient  # noqa: E402

from contract_models import make_model  # noqa: E402
from runtime import Predictor, Roi  # noqa: E402
from simulator.camera_sim import render  # noqa: E402
from runtime.serve import ServeConfig, Service, create_app  # noqa: E402
from runtime.serve.errors import ServiceError  # noqa: E402
from runtime.images import decode  # noqa: E402


def encode(image: np.ndarray, ext: str = ".png", **params) -> bytes:
    ok, data = cv2.imencode(ext, image, [int(k) for kv in params.items() for k in kv])
    assert ok
    return data.tobytes()


def gray_png(width: int, height: int, idat: bytes) -> bytes:
    """An 8-bit grayscale PNG with the given header size and compressed pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a few bytes of pixel data."""
    return gray_png(width, height, zlib.compress(b"\0" * 64))


def png_bomb(side: int = 20000) -> bytes:
    """A real, valid side x side black PNG: a few hundred KB that decode to side² bytes."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    return gray_png(side, side, b"".join([compressor.compress(row) for _ in range(side)] + [compressor.flush()]))


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(ServeConfig(max_bytes=2_000_000, max_batch=8))) as c:
        yield c


@pytest.fixture(scope="module")
def bundled_labels():
    return Predictor().labels


@pytest.fixture(scope="module")
def test_images(fashion):
    rng = np.random.default_rng(5)
    picks = rng.choice(len(fashion.test_labels), 64, replace=False)
    return fashion.test_images[picks], fashion.test_labels[picks]


@pytest.fixture(scope="module")
def frame(fashion):
    """A camera-like 640x480 frame of a test trouser, as JPEG bytes."""
    trouser = fashion.test_images[np.flatnonzero(fashion.test_labels == 1)[0]]
    return encode(render(trouser, np.random.default_rng(1)), ".jpg", **{str(cv2.IMWRITE_JPEG_QUALITY): 90})


def post_image(client, data: bytes, kind: str = "image/png", query: str = "", headers: dict | None = None):
    return client.post(f"/v1/classify{query}", content=data, headers={"Content-Type": kind, **(headers or {})})


def test_classify_png_answers_like_the_runtime(client, test_images):
    images, labels = test_images
    predictor = Predictor()
    answers = [post_image(client, encode(image)) for image in images]
    assert all(a.status_code == 200 for a in answers)
    body = answers[0].json()
    assert set(body) >= {"label", "index", "confidence", "top_k", "model", "latency_ms", "object_found", "box"}
    assert len(body["top_k"]) == 3 and body["top_k"][0]["label"] == body["label"]
    assert body["latency_ms"] > 0 and body["model"]["version"] == predictor.info.version
    got = np.array([a.json()["index"] for a in answers])
    expected = np.array([predictor.predict(image).index for image in images])
    np.testing.assert_array_equal(got, expected)  # PNG is lossless: exactly the runtime's answers
    assert (got == labels).mean() >= 0.85


def test_camera_frame_json_multipart_and_top_k(client, frame):
    decoded = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_GRAYSCALE)
    expected = Predictor().predict(decoded)
    raw = post_image(client, frame, "image/jpeg", "?top_k=5").json()
    form = client.post("/v1/classify?top_k=5", files={"image": ("f.jpg", frame, "image/jpeg")}).json()
    assert raw["label"] == form["label"] == expected.label == "Trouser"
    assert raw["object_found"] and len(raw["top_k"]) == 5
    x, y, w, h = raw["box"]
    assert 0 <= x < x + w <= 640 and 0 <= y < y + h <= 480 and h > 100  # the trouser, in frame pixels


def test_roi_limits_where_to_look(client, frame):
    found = post_image(client, frame, "image/jpeg", "?roi=0,0,640,480").json()
    corner = post_image(client, frame, "image/jpeg", "?roi=0,0,60,60").json()
    assert found["object_found"] and not corner["object_found"]


def test_large_jpeg_is_decoded_downscaled_and_the_box_is_in_upload_pixels(client, fashion):
    trouser = fashion.test_images[np.flatnonzero(fashion.test_labels == 1)[1]]
    big = encode(render(trouser, np.random.default_rng(2), size=(4000, 3000)), ".jpg",
                 **{str(cv2.IMWRITE_JPEG_QUALITY): 60})
    assert 256 * 1024 < len(big) < 2_000_000  # decoded off the event loop, within the client's byte limit
    answer = post_image(client, big, "image/jpeg").json()
    assert answer["label"] == "Trouser"
    x, y, w, h = answer["box"]
    assert x + w <= 4000 and y + h <= 3000 and h > 1000


def test_batch_is_one_call_with_answers_in_order(client, test_images, frame):
    images, _ = test_images
    files = [("image", (f"{i}.png", encode(image), "image/png")) for i, image in enumerate(images[:5])]
    files.append(("image", ("frame.jpg", frame, "image/jpeg")))
    response = client.post("/v1/classify/batch?top_k=2", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    singles = [post_image(client, data).json()["label"] for _, (_, data, _) in files[:5]]
    assert [r["label"] for r in results] == [*singles, "Trouser"]
    assert all(len(r["top_k"]) == 2 for r in results)


def test_bmp_and_webp_are_accepted(client, test_images):
    image = test_images[0][0]
    for ext, kind in ((".bmp", "image/bmp"), (".webp", "image/webp")):
        assert post_image(client, encode(image, ext), kind).status_code == 200


@pytest.fixture(scope="module")
def bad_requests(test_images):
    png = encode(test_images[0][0])
    big_png = encode(np.random.default_rng(0).integers(0, 255, (1600, 1600), dtype=np.uint8))
    return {
        "empty body": (dict(content=b"", headers={"Content-Type": "image/png"}), 400),
        "truncated PNG": (dict(content=png[: len(png) // 2], headers={"Content-Type": "image/png"}), 400),
        "truncated JPEG": (dict(content=encode(np.full((64, 64), 90, np.uint8), ".jpg")[:200],
                                headers={"Content-Type": "image/jpeg"}), 400),
        "text as image": (dict(content=b"hello, world", headers={"Content-Type": "image/png"}), 415),
        "GIF": (dict(content=b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", headers={"Content-Type": "image/gif"}), 415),
        "wrong content type": (dict(content=png, headers={"Content-Type": "text/plain"}), 415),
        "JSON body": (dict(json={"image": "x"}), 415),
        "no content type": (dict(content=png, headers={"Content-Type": ""}), 415),
        "too many bytes": (dict(content=big_png, headers={"Content-Type": "image/png"}), 413),
        "too many pixels": (dict(content=png_header_only(20000, 20000), headers={"Content-Type": "image/png"}), 413),
        "multipart without image": (dict(files={"picture": ("a.png", png, "image/png")}), 400),
        "multipart image as text": (dict(data={"image": "not a file"}, files={"x": ("a", b"", "text/plain")}), 400),
        "two images to /classify": (dict(files=[("image", ("a.png", png)), ("image", ("b.png", png))]), 400),
        "top_k 0": (dict(content=png, headers={"Content-Type": "image/png"}, params={"top_k": "0"}), 422),
        "top_k 11": (dict(content=png, headers={"Content-Type": "image/png"}, params={"top_k": "11"}), 422),
        "top_k abc": (dict(content=png, headers={"Content-Type": "image/png"}, params={"top_k": "abc"}), 422),
        "roi three numbers": (dict(content=png, headers={"Content-Type": "image/png"}, params={"roi": "1,2,3"}), 422),
        "roi negative": (dict(content=png, headers={"Content-Type": "image/png"}, params={"roi": "-1,0,5,5"}), 422),
        "roi empty": (dict(content=png, headers={"Content-Type": "image/png"}, params={"roi": "0,0,0,5"}), 422),
        "roi outside": (dict(content=png, headers={"Content-Type": "image/png"}, params={"roi": "50,50,10,10"}), 422),
    }


BAD = ["empty body", "truncated PNG", "truncated JPEG", "text as image", "GIF", "wrong content type", "JSON body",
       "no content type", "too many bytes", "too many pixels", "multipart without image", "multipart image as text",
       "two images to /classify", "top_k 0", "top_k 11", "top_k abc", "roi three numbers", "roi negative",
       "roi empty", "roi outside"]


@pytest.mark.parametrize("case", BAD)
def test_bad_requests_get_a_4xx_json_error(client, bad_requests, case):
    kwargs, status = bad_requests[case]
    response = client.post("/v1/classify", **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["detail"]  # a message that says what was wrong


def test_bad_batches_and_routes(client, test_images):
    png = encode(test_images[0][0])
    too_many = client.post("/v1/classify/batch", files=[("image", (f"{i}.png", png)) for i in range(9)])
    assert too_many.status_code == 400 and "at most 8" in too_many.json()["detail"]
    raw = client.post("/v1/classify/batch", content=png, headers={"Content-Type": "image/png"})
    assert raw.status_code == 415
    broken = client.post("/v1/classify/batch", files=[("image", ("a.png", png)), ("image", ("b.png", b"junk"))])
    assert broken.status_code == 415 and broken.json()["detail"].startswith("image 2:")
    assert client.get("/v1/classify").status_code == 405
    assert client.delete("/v1/model").status_code == 405
    assert client.get("/v2/anything").status_code == 404
    bad_multipart = client.post("/v1/classify/batch", content=b"--x\r\nbroken",
                                headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert 400 <= bad_multipart.status_code < 500


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), cut=st.integers(0, 2000), flips=st.lists(st.integers(0, 10**6), max_size=6),
       kind=st.sampled_from(["image/png", "image/jpeg", "image/bmp", "image/webp"]))
def test_fuzzed_bodies_never_get_a_5xx(client, frame, data, cut, flips, kind):
    mutated = bytearray(frame[: len(frame) - cut])
    for position in flips:
        if mutated:
            mutated[position % len(mutated)] ^= 0xFF
    for body in (data, bytes(mutated)):
        response = post_image(client, body, kind)
        assert response.status_code == 200 or 400 <= response.status_code < 500, response.text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(height=st.integers(1, 300), width=st.integers(1, 300), channels=st.sampled_from([1, 3, 4]),
       seed=st.integers(0, 2**32 - 1), ext=st.sampled_from([".png", ".jpg", ".bmp"]))
def test_any_valid_image_of_any_size_gets_an_answer(client, bundled_labels, height, width, channels, seed, ext):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    if ext == ".jpg" and channels == 4:
        image = image[..., :3]
    response = post_image(client, encode(image, ext), "image/" + ext[1:].replace("jpg", "jpeg"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["label"] in bundled_labels and 0 <= answer["confidence"] <= 1


def test_model_health_docs_and_page(client):
    model = client.get("/v1/model").json()
    assert len(model["labels"]) == 10 and model["input"]["layout"] == "NHWC" and model["model_version"]
    assert model["contract"] == {  # the contract in one shape, whatever the metadata's version
        "labels": model["labels"], "input": {"height": 28, "width": 28, "channels": 1, "range": [0.0, 1.0]},
        "preprocessing": {"kind": "object"}}
    assert client.get("/healthz").json()["status"] == "ok"
    schema = client.get("/openapi.json").json()
    classify = schema["paths"]["/v1/classify"]["post"]
    assert {"image/png", "image/jpeg", "multipart/form-data"} <= set(classify["requestBody"]["content"])
    assert {p["name"] for p in classify["parameters"]} == {"top_k", "roi"}
    assert "/v1/classify/batch" in schema["paths"] and "413" in classify["responses"]
    docs = client.get("/docs").text
    assert "swagger" in docs.lower() and "cdn" not in docs.lower()  # works offline
    page = client.get("/")
    assert page.status_code == 200 and "getUserMedia" in client.get("/static/app.js").text
    assert not re.search(r"(src|href)=\"https?://", page.text)  # no CDN


def test_metrics_count_requests_by_route_and_status(client, test_images):
    png = encode(test_images[0][0])
    before = client.get("/metrics").text
    post_image(client, png)
    client.get("/not-a-route")
    after = client.get("/metrics").text

    def count(text: str, route: str, status: str) -> float:
        match = re.search(rf'fashion_edge_requests_total{{route="{re.escape(route)}",status="{status}"}} (\S+)', text)
        return float(match.group(1)) if match else 0.0

    assert count(after, "/v1/classify", "200") == count(before, "/v1/classify", "200") + 1
    assert count(after, "other", "404") == count(before, "other", "404") + 1
    assert 'fashion_edge_request_duration_seconds_bucket{le="0.005",route="/v1/classify"}' in after
    assert "fashion_edge_model_info{" in after and "fashion_edge_predictions_total{" in after


def test_token_guards_v1_and_cors_is_off_by_default(test_images):
    png = encode(test_images[0][0])
    with TestClient(create_app(ServeConfig(token="s3cret"))) as secured:
        assert post_image(secured, png).status_code == 401
        assert post_image(secured, png, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert secured.get("/v1/model").status_code == 401
        assert post_image(secured, png, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert secured.get("/healthz").status_code == 200
        response = secured.get("/v1/model", headers={"Origin": "https://elsewhere.example"})
        assert "access-control-allow-origin" not in response.headers
    with TestClient(create_app(ServeConfig(cors_origins=("https://shop.example",)))) as open_to_one:
        allowed = open_to_one.get("/healthz", headers={"Origin": "https://shop.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_the_hot_route_answers_as_its_fastapi_route(test_images, token):
    """POST /v1/classify is served by a plain Starlette route ahead of its FastAPI route (the one the
    schema describes): with the FastAPI route alone, every answer (status, headers, body but the
    latency) is the same, errors, other methods, the token and a trailing slash included."""
    from starlette.routing import Route

    png = encode(test_images[0][0])
    fast_app, plain_app = create_app(ServeConfig(token=token)), create_app(ServeConfig(token=token))
    plain_app.router.routes[:] = [r for r in plain_app.router.routes
                                  if not (type(r) is Route and r.path == "/v1/classify")]
    assert len(fast_app.router.routes) == len(plain_app.router.routes) + 1
    assert fast_app.openapi() == plain_app.openapi()
    image = {"Content-Type": "image/png"}
    queries = ("", "?top_k=2&roi=0,0,10,10", "?top_k=99", "?roi=a", "/")
    cases = [("POST", query, {"content": png, "headers": image}) for query in queries]
    cases += [("POST", "", {"content": b"", "headers": image}),
              ("POST", "", {"content": b"xx", "headers": {"Content-Type": "text/plain"}}),
              ("POST", "", {"files": {"image": ("a.png", png, "image/png")}}),
              ("POST", "", {"content": png, "headers": {**image, "Content-Length": "999999999"}}),
              ("GET", "", {}), ("HEAD", "", {}), ("PUT", "", {})]
    for authorization in ("Bearer s3cret", "Bearer wrong", "Basic czNjcmV0", "Bearer"):
        cases.append(("POST", "", {"content": png, "headers": {**image, "Authorization": authorization}}))

    def answer(client, method, suffix, kwargs):
        response = client.request(method, "/v1/classify" + suffix, follow_redirects=False, **kwargs)
        body = response.json() if response.content.startswith(b"{") else response.content
        if isinstance(body, dict):
            body.pop("latency_ms", None)
        headers = {k: v for k, v in response.headers.items() if k not in ("date", "content-length")}
        return response.status_code, headers, body

    with TestClient(fast_app) as fast, TestClient(plain_app) as plain:
        for method, suffix, kwargs in cases:
            assert answer(fast, method, suffix, kwargs) == answer(plain, method, suffix, kwargs), (method, suffix)


def test_cli_defaults_are_safe_and_a_bad_model_exits_2(tmp_path):
    from runtime.serve.__main__ import parse_args

    args = parse_args([])
    assert args.host == "127.0.0.1" and args.token is None and args.cors_origin == [] and args.max_bytes == 8 << 20
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    run = subprocess.run([sys.executable, "-m", "runtime.serve", "--model", str(bad)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and "broken.onnx" in run.stderr


# --- models of other contracts (tests/contract_models.py): colour, other sizes, other label counts ----

RGB_LABELS = ("a", "b", "c", "d", "e")


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory):
    """A 32x32 RGB model with 5 labels and "resize" preprocessing, built with onnx.helper."""
    return make_model(tmp_path_factory.mktemp("rgb") / "rgb.onnx", RGB_LABELS, 32, 32, 3, kind="resize", seed=1)


@pytest.fixture(scope="module")
def rgb_client(rgb_model):
    with TestClient(create_app(ServeConfig(model=str(rgb_model), max_batch=8))) as c:
        yield c


@pytest.fixture(scope="module")
def gray2_model(tmp_path_factory):
    """A 20x20 gray model with 2 labels."""
    return make_model(tmp_path_factory.mktemp("gray2") / "gray2.onnx", ("no", "yes"), 20, 20, 1, kind="resize", seed=2)


def colour_picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """BGR uint8 with structure in every channel (a plain random image averages out when resized)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    for channel in range(3):
        y, x = rng.integers(0, height - height // 3), rng.integers(0, width - width // 3)
        image[y:y + height // 3, x:x + width // 3, channel] = rng.integers(120, 256)
    return image + rng.integers(0, 40, image.shape, dtype=np.uint8)


def probabilities(answer: dict, labels) -> np.ndarray:
    by_label = {item["label"]: item["confidence"] for item in answer["top_k"]}
    return np.array([by_label[label] for label in labels])


def test_rgb_model_reports_its_contract(rgb_client):
    model = rgb_client.get("/v1/model").json()
    assert model["labels"] == list(RGB_LABELS) and model["input"]["shape"] == [-1, 32, 32, 3]
    assert model["contract"] == {"labels": list(RGB_LABELS),
                                 "input": {"height": 32, "width": 32, "channels": 3, "range": [0.0, 1.0]},
                                 "preprocessing": {"kind": "resize"}}
    assert model["model_version"] == "test" and model["file"] == "rgb.onnx"
    schema = rgb_client.get("/openapi.json").json()
    top_k = next(p for p in schema["paths"]["/v1/classify"]["post"]["parameters"] if p["name"] == "top_k")
    assert top_k["schema"]["maximum"] == 5 and top_k["schema"]["default"] == 3


def test_rgb_model_classifies_colour_like_the_runtime(rgb_client, rgb_model):
    predictor = Predictor(rgb_model)
    for seed, (height, width) in enumerate([(120, 90), (32, 32), (31, 200)]):
        bgr = colour_picture(height, width, seed)
        png = encode(bgr)
        assert np.array_equal(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), bgr)  # lossless
        answer = post_image(rgb_client, png, query="?top_k=5").json()
        expected = predictor.predict(bgr)
        assert answer["label"] == expected.label and answer["index"] == expected.index
        np.testing.assert_allclose(probabilities(answer, RGB_LABELS), expected.probabilities, atol=1e-5)
        assert answer["box"] == [0, 0, width, height]  # "resize": the whole image
        assert len(post_image(rgb_client, png).json()["top_k"]) == 3  # the default


def test_rgb_model_gets_rgb_in_the_model_s_order(rgb_client, rgb_model):
    """A 32x32 upload is the model's input as it is: checked against the graph computed by numpy."""
    from contract_models import reference

    bgr = colour_picture(32, 32, 7)
    answer = post_image(rgb_client, encode(bgr), query="?top_k=5").json()
    rgb = bgr[..., ::-1].astype(np.float32)[None] / 255
    np.testing.assert_allclose(probabilities(answer, RGB_LABELS), reference(rgb_model, rgb)[0], atol=1e-5)
    swapped = reference(rgb_model, bgr.astype(np.float32)[None] / 255)[0]
    assert not np.allclose(probabilities(answer, RGB_LABELS), swapped, atol=1e-3)  # the order matters here


def test_rgb_model_roi_batch_and_any_upload(rgb_client, rgb_model):
    predictor = Predictor(rgb_model)
    bgr = colour_picture(120, 160, 3)
    answer = post_image(rgb_client, encode(bgr), query="?top_k=5&roi=10,20,64,48").json()
    expected = predictor.predict(bgr, Roi(10, 20, 64, 48))
    np.testing.assert_allclose(probabilities(answer, RGB_LABELS), expected.probabilities, atol=1e-5)
    assert answer["box"] == [10, 20, 64, 48]
    outside = post_image(rgb_client, encode(bgr), query="?roi=100,100,61,10")
    assert outside.status_code == 422 and "160x120" in outside.json()["detail"]
    # a batch is one inference call over the same pixels
    pictures = [colour_picture(60, 80, seed) for seed in range(4)]
    files = [("image", (f"{i}.png", encode(p), "image/png")) for i, p in enumerate(pictures)]
    results = rgb_client.post("/v1/classify/batch?top_k=5", files=files).json()["results"]
    for result, expected in zip(results, predictor.predict_batch(pictures)):
        np.testing.assert_allclose(probabilities(result, RGB_LABELS), expected.probabilities, atol=1e-5)
    # gray, BGRA, BMP, JPEG (colour and gray) and WebP uploads all become BGR
    for image, ext in [(bgr[..., 0], ".png"), (cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA), ".png"), (bgr, ".bmp"),
                       (bgr, ".jpg"), (bgr[..., 1], ".jpg"), (bgr, ".webp")]:
        response = post_image(rgb_client, encode(image, ext), "image/" + ext[1:].replace("jpg", "jpeg"))
        assert response.status_code == 200 and response.json()["label"] in RGB_LABELS, (ext, image.shape)


def test_large_colour_jpeg_roi_is_in_upload_pixels(rgb_client, rgb_model):
    bgr = cv2.resize(colour_picture(150, 200, 4), (2400, 1800), interpolation=cv2.INTER_NEAREST)
    jpeg = encode(bgr, ".jpg", **{str(cv2.IMWRITE_JPEG_QUALITY): 90})
    decoded = decode(jpeg, 16_000_000, channels=3)
    assert decoded.pixels.shape == (900, 1200, 3) and decoded.scale == 0.5 and decoded.size == (2400, 1800)
    assert decoded.pixels.flags.c_contiguous and decoded.pixels.dtype == np.uint8
    whole = post_image(rgb_client, jpeg, "image/jpeg", "?roi=0,0,2400,1800")
    assert whole.status_code == 200 and whole.json()["box"] == [0, 0, 2400, 1800]
    edge = post_image(rgb_client, jpeg, "image/jpeg", "?roi=2399,1799,1,1")  # the last pixel, halved: still in
    assert edge.status_code == 200
    outside = post_image(rgb_client, jpeg, "image/jpeg", "?roi=2300,0,101,10")
    assert outside.status_code == 422 and "2400x1800" in outside.json()["detail"]


def test_decoding_follows_the_model_s_channels():
    bgr = colour_picture(40, 30, 5)
    png = encode(bgr)
    gray, as_is = decode(png, 10**6, channels=1), decode(png, 10**6)
    assert gray.pixels.shape == (40, 30) and np.array_equal(gray.pixels, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    colour = decode(png, 10**6, channels=3)
    assert colour.pixels.shape == (40, 30, 3) and np.array_equal(colour.pixels, bgr)
    assert np.array_equal(as_is.pixels, bgr)  # by default, as the file is: colour
    assert colour.pixels.flags.c_contiguous and colour.size == (30, 40) and colour.scale == 1
    deep = encode((np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 50))  # a 16-bit gray PNG
    expected = ((np.arange(40 * 30).reshape(40, 30) * 50) >> 8).astype(np.uint8)
    assert np.array_equal(decode(deep, 10**6, channels=1).pixels, expected)
    assert np.array_equal(decode(deep, 10**6, channels=3).pixels, np.repeat(expected[..., None], 3, axis=2))


def test_two_label_gray_model(gray2_model, tmp_path):
    with TestClient(create_app(ServeConfig(model=str(gray2_model)))) as client:
        model = client.get("/v1/model").json()
        assert model["contract"]["labels"] == ["no", "yes"]
        assert model["contract"]["input"] == {"height": 20, "width": 20, "channels": 1, "range": [0.0, 1.0]}
        image = (np.arange(50 * 40) % 251).astype(np.uint8).reshape(50, 40)
        answer = post_image(client, encode(image))
        assert answer.status_code == 200 and len(answer.json()["top_k"]) == 2  # no top_k: both labels, not a 422
        expected = Predictor(gray2_model).predict(image)
        np.testing.assert_allclose(probabilities(answer.json(), ("no", "yes")), expected.probabilities, atol=1e-5)
        assert answer.json()["label"] == expected.label
        too_many = post_image(client, encode(image), query="?top_k=3")
        assert too_many.status_code == 422 and "from 1 to 2" in too_many.json()["detail"]
        batch = client.post("/v1/classify/batch", files=[("image", ("a.png", encode(image)))]).json()
        assert len(batch["results"][0]["top_k"]) == 2


def test_service_is_callable_without_http(gray2_model):
    service = Service(ServeConfig(model=str(gray2_model)))
    image = (np.arange(20 * 20) % 200).astype(np.uint8).reshape(20, 20)
    answer = service.classify_bytes(encode(image), 1, None, 0.0)
    assert answer["label"] == Predictor(gray2_model).predict(image).label and len(answer["top_k"]) == 1
    assert service.default_top_k == 2 and service.max_top_k == 2
    assert service.metadata()["contract"]["preprocessing"] == {"kind": "resize"}
    with pytest.raises(ServiceError) as refused:  # its own error, no HTTP; the status is a hint for the routes
        service.classify_bytes(b"", 1, None, 0.0)
    assert refused.value.status == 400 and "empty" in str(refused.value)
    with pytest.raises(ServiceError) as refused:
        service.classify_bytes(encode(image), 1, Roi(15, 15, 10, 10), 0.0)
    assert refused.value.status == 422 and "does not fit inside the 20x20 image" in str(refused.value)


def test_a_model_whose_metadata_mismatches_its_graph_is_refused_at_start(tmp_path):
    model = make_model(tmp_path / "three_of_four.onnx", ("a", "b", "c"), 32, 32, 3, classes=4)
    run = subprocess.run([sys.executable, "-m", "runtime.serve", "--model", str(model), "--workers", "2"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "three_of_four.onnx" in run.stderr and "3 labels" in run.stderr and "4 classes" in run.stderr
    assert "serving" not in run.stdout  # no worker was started
    bad_meta = make_model(tmp_path / "no_kind.onnx", meta={"format_version": 2, "labels": ["a", "b", "c", "d", "e"],
                                                          "input": {"shape": [-1, 32, 32, 3]}})
    run = subprocess.run([sys.executable, "-m", "runtime.serve", "--model", str(bad_meta)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "preprocessing.kind" in run.stderr


# --- a real server: two uvicorn workers -----------------------------------------------------------

def worker_pids(parent: int) -> list[int]:
    """uvicorn's worker processes (not multiprocessing's resource tracker)."""
    pids = [int(p) for task in Path(f"/proc/{parent}/task").iterdir() for p in (task / "children").read_text().split()]
    return [p for p in pids if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


@pytest.fixture(scope="module")
def server(start_server):
    return start_server("--workers", "2", "--body-timeout", "2",
                        ready=lambda process: len(worker_pids(process.pid)) == 2)


def server_sockets(port: int) -> dict[int, list[str]]:
    """This machine's TCP sockets on local ``port`` by inode: [state, local address] (/proc/net/tcp)."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return {int(row[9]): [row[3], row[1]] for row in rows if row[1].endswith(f":{port:04X}")}


def owners(pids: list[int], inodes) -> dict[int, int]:
    """How many of the socket ``inodes`` each process of ``pids`` holds."""
    links = {pid: {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()} for pid in pids}
    return {pid: sum(f"socket:[{inode}]" in links[pid] for inode in inodes) for pid in pids}


def test_each_worker_listens_on_its_own_socket_and_the_kernel_spreads_connections(server):
    """Workers sharing one listening socket accept in bursts (32 keep-alive clients split 2/30 in
    one run of five, and the busy worker sets the tail); with a socket each, the kernel hands each
    connection to one of them by hash."""
    url, process = server
    port, workers = int(url.rsplit(":", 1)[1]), worker_pids(process.pid)
    deadline = time.time() + 30  # a worker listens once its app has started
    while time.time() < deadline and len(listening := [i for i, (state, _) in server_sockets(port).items()
                                                       if state == "0A"]) < 2:
        time.sleep(0.2)
    assert sorted(owners([process.pid, *workers], listening).values()) == [0, 1, 1]  # the parent only binds
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
    try:
        time.sleep(0.5)
        accepted = [i for i, (state, _) in server_sockets(port).items() if state == "01"]
        per_worker = owners(workers, accepted)
        assert sum(per_worker.values()) == 40 and min(per_worker.values()) > 0, per_worker  # 2^-39 otherwise
    finally:
        for client in clients:
            client.close()


def test_a_worker_given_the_parents_socket_opens_its_own_on_the_same_port():
    from runtime.serve import listen

    if not listen.SPREADS:
        pytest.skip("the workers share one socket here")
    parent = listen.workers_socket("127.0.0.1", 0)
    workers = [pickle.loads(pickle.dumps(parent)) for _ in range(2)]  # what multiprocessing does for each
    try:
        for sock in workers:
            assert sock.getsockname() == parent.getsockname() and sock.fileno() != parent.fileno()
            sock.listen()
        with socket.create_connection(parent.getsockname()):  # the parent's own socket never listens
            pass
        with pytest.raises(OSError):
            listen.workers_socket(*parent.getsockname())  # the port is taken
    finally:
        for sock in [parent, *workers]:
            sock.close()


def test_a_second_server_on_the_same_port_is_refused(server):
    url, _ = server
    run = subprocess.run([sys.executable, "-m", "runtime.serve", "--workers", "2", "--port", url.rsplit(":", 1)[1]],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "cannot listen on 127.0.0.1 port" in run.stderr, run.stdout + run.stderr
    assert "serving" not in run.stdout


def test_decompression_bomb_is_refused_in_bounded_memory(server):
    import httpx

    url, process = server
    bomb = png_bomb(20000)
    assert len(bomb) < 1_000_000  # a small upload that would decode to 400 MB
    for _ in range(4):  # reach both workers
        response = httpx.post(f"{url}/v1/classify", content=bomb, headers={"Content-Type": "image/png"})
        assert response.status_code == 413 and "limit of 16,000,000 pixels" in response.json()["detail"]
    assert all(peak_rss_mb(pid) < 500 for pid in worker_pids(process.pid))


def test_slow_client_does_not_stall_others_and_times_out(server, test_images):
    import httpx

    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    png = encode(test_images[0][0])
    slow = socket.create_connection(("127.0.0.1", port))
    slow.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                 b"Content-Length: 5000\r\n\r\n" + png[:10])  # then nothing more
    started = time.time()
    for _ in range(20):  # both workers keep answering while the slow upload hangs
        assert httpx.post(f"{url}/v1/classify", content=png, headers={"Content-Type": "image/png"}).status_code == 200
    assert time.time() - started < 5
    slow.settimeout(10)
    answer = slow.recv(4096).decode()
    slow.close()
    assert answer.startswith("HTTP/1.1 408")


def test_metrics_add_up_across_workers(server, test_images):
    import httpx

    url, _ = server
    png = encode(test_images[0][1])
    with httpx.Client() as http:
        def served() -> float:
            text = http.get(f"{url}/metrics").text
            return sum(float(v) for v in re.findall(r'fashion_edge_requests_total{route="/v1/classify/batch",'
                                                     r'status="200"} (\S+)', text))
        before = served()
        for _ in range(30):  # new connections: the kernel spreads them over both workers
            httpx.post(f"{url}/v1/classify/batch", files=[("image", ("a.png", png))])
        assert served() == before + 30
