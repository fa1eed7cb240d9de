"""What an upload may cost the server, judged before decoding; and the images at the edges.

- Costly shapes and decoders are refused from the header: extreme aspect ratios, compressed
  BMPs (Pillow's pure-Python decoder), progressive JPEGs by their declared size and coefficient
  buffer, too many JPEG scans. Large images are shrunk as they are decoded.
- Decoding never runs on the event loop; requests queue for one worker thread, 503 when the queue
  is full; a batch's pixels share one budget.
- MPO photos are JPEGs (EXIF rotation applied); transparent images are composited on white; a
  roi on a large or rotated photo is in the upload's pixels.
- The CLI refuses truncated images and says "nothing found".
- A real one-worker server under abuse: /healthz keeps answering, and the worker's memory stays
  bounded (peak and after).
"""

import asyncio
import io
import json
import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
cv2 = pytest.importorskip("cv2")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from runtime import Predictor  # noqa: E402
from simulator.camera_sim import render  # noqa: E402
from runtime.serve import ServeConfig, create_app  # noqa: E402
from runtime.images import BadImage, decode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 16_000_000  # the server's default --max-pixels


# --- files of any shape, built without decoding them -------------------------------------------------

def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def flat_png(width: int, height: int, value: int = 0) -> bytes:
    """A valid gray PNG of one value: a few KB however many pixels it has."""
    raw = (b"\0" + bytes([value]) * width) * height
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def rle_bmp(width: int, height: int, rle4: bool = False) -> bytes:
    """A valid RLE8/RLE4 BMP, its costliest kind for Pillow's Python decoder: one pixel, then end of line."""
    pixels = b"\x01\x05\x00\x00" * height + b"\x00\x01"
    colours = 16 if rle4 else 256
    palette = b"".join(bytes([i, i, i, 0]) for i in range(colours))
    offset = 14 + 40 + len(palette)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 4 if rle4 else 8, 2 if rle4 else 1, len(pixels),
                       2835, 2835, colours, 0)
    return header + info + palette + pixels


def save(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0/SOF2) claiming width x height."""
    at = re.search(rb"\xff[\xc0\xc2]", jpeg).start()
    return jpeg[:at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9:]


def with_scans(jpeg: bytes, copies: int) -> bytes:
    """A progressive JPEG with its last scan repeated: that many more passes over the coefficients."""
    last = jpeg.rindex(b"\xff\xda")
    return jpeg[:last] + jpeg[last:-2] * copies + b"\xff\xd9"


def exif(orientation: int) -> bytes:
    data = Image.Exif()
    data[0x0112] = orientation
    return data.tobytes()


def colour_scene(width: int, height: int) -> Image.Image:
    """RGB with a dark block off-centre on a light background (so a rotation shows)."""
    image = np.full((height, width, 3), 215, np.uint8)
    image[height // 5:height // 2, width // 6:width // 2] = (40, 60, 150)
    return Image.fromarray(image)


def refused(data: bytes, max_pixels: int = LIMIT, channels: int = 1) -> BadImage:
    started = time.perf_counter()
    with pytest.raises(BadImage) as error:
        decode(data, max_pixels, channels)
    assert time.perf_counter() - started < 0.2, "refused from the header, not after decoding"
    return error.value


# --- 1. costly shapes and decoders, refused from the header ------------------------------------------

def test_extreme_aspect_ratios_are_refused_before_decoding():
    for width, height in ((4, 4_000_000), (4_000_000, 4), (100, 2100)):
        data = flat_png(width, height)
        assert len(data) < 80_000  # small files ...
        error = refused(data)  # ... of costly shapes: 413/422 without decoding
        assert error.status == 422 and f"{width}x{height}" in str(error) and "20 times" in str(error)
    for width, height in ((1, 300), (300, 1), (100, 2000)):  # thin but small, or 20:1: decoded as before
        decoded = decode(flat_png(width, height, 90), LIMIT)
        assert decoded.size == (width, height) and decoded.pixels.max() == 90


def test_compressed_bmps_get_a_far_smaller_pixel_budget():
    for rle4 in (False, True):
        bomb = rle_bmp(4000, 4000, rle4)
        assert len(bomb) < 20_000  # decoding it cost Pillow's Python decoder about 2 s
        error = refused(bomb)
        assert error.status == 413 and "RLE-compressed BMP of 4000x4000" in str(error)
        small = rle_bmp(64, 48, rle4)  # a small one is fine, and right
        pixels = decode(small, LIMIT).pixels
        expected = np.zeros((48, 64), np.uint8)
        expected[:, 0] = 0 if rle4 else 5  # one pixel a row: index 5 (RLE4: the byte's high nibble, 0)
        assert np.array_equal(pixels, expected)
    raw = save(Image.new("RGB", (2000, 1500), (10, 200, 30)), "BMP")  # uncompressed: C, the full limit
    assert decode(raw, LIMIT, 3).size == (2000, 1500)


def test_progressive_jpegs_are_judged_by_declared_size_and_coefficients():
    small = save(Image.new("L", (64, 64), 128), "JPEG", progressive=True)
    bomb = claiming(small, 16000, 11000)  # passed as 2000x1375 after draft(); libjpeg buffered 352 MB
    error = refused(bomb)
    assert error.status == 413 and "16000x11000" in str(error)
    baseline = claiming(save(Image.new("L", (64, 64), 128), "JPEG"), 16000, 11000)
    assert refused(baseline).status == 413  # the declared size, before draft, for every JPEG
    # Within the pixel limit, a progressive JPEG still needs 2 bytes per DCT coefficient of every
    # component: 4:4:4 colour is 6 bytes a pixel, over a budget of 4 bytes per pixel of the limit.
    picture = colour_scene(400, 300)
    progressive = save(picture, "JPEG", progressive=True, subsampling=0)
    error = refused(progressive, max_pixels=130_000, channels=3)
    assert error.status == 413 and "progressive JPEG of 400x300" in str(error)
    for fine in (save(picture, "JPEG", subsampling=0),  # baseline: rows streamed
                 save(picture, "JPEG", progressive=True, subsampling=2),  # 4:2:0: 3 bytes a pixel
                 save(picture.convert("L"), "JPEG", progressive=True)):  # gray: 2 bytes a pixel
        assert decode(fine, 130_000, 3).size == (400, 300)
    scans = with_scans(save(picture, "JPEG", progressive=True), 100)
    error = refused(scans)
    assert error.status == 413 and "scans" in str(error)


def test_webp_is_budgeted_by_its_decoder_s_memory():
    big = save(Image.new("RGB", (2000, 1900), (90, 90, 90)), "WEBP", lossless=True)
    error = refused(big, max_pixels=8_000_000)  # 16 bytes a pixel: at most a quarter of the pixel limit
    assert error.status == 413 and "WebP of 2000x1900" in str(error)
    assert decode(big, LIMIT).size == (2000, 1900)  # 3.8 MP: under a quarter of 16 MP


def test_large_images_are_shrunk_as_they_are_decoded():
    for data, size in ((flat_png(4000, 3000, 77), (4000, 3000)),
                       (save(colour_scene(3000, 2500), "PNG"), (3000, 2500)),
                       (save(colour_scene(3000, 2500), "BMP"), (3000, 2500)),
                       (save(colour_scene(2100, 1900), "WEBP", quality=80), (2100, 1900)),
                       (save(colour_scene(4000, 3000), "JPEG"), (4000, 3000))):
        for channels in (1, 3):
            decoded = decode(data, LIMIT, channels)
            height, width = decoded.pixels.shape[:2]
            assert 1024 <= max(width, height) < 2048 and decoded.size == size
            assert decoded.scale == pytest.approx(max(width, height) / max(size))
            assert abs(width / height - size[0] / size[1]) < 0.01


# --- 2. MPO, transparency, and roi at the edges -----------------------------------------------------

def test_mpo_photos_are_decoded_as_jpeg_with_exif_rotation():
    picture = colour_scene(2400, 1800)
    mpo = save(picture, "MPO", save_all=True, append_images=[picture], exif=exif(6), quality=90)
    jpeg = save(picture, "JPEG", exif=exif(6), quality=90)
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    for channels in (1, 3):
        from_mpo, from_jpeg = decode(mpo, LIMIT, channels), decode(jpeg, LIMIT, channels)
        assert from_mpo.size == (1800, 2400) and from_mpo.scale == 0.5  # turned, and drafted at 1/2
        assert from_mpo.pixels.shape[:2] == (1200, 900)
        assert np.array_equal(from_mpo.pixels, from_jpeg.pixels)
    # orientation 6: the picture turned clockwise; its dark block (top-left) is now top-right
    pixels = decode(mpo, LIMIT).pixels
    assert pixels[:600, 450:].mean() < pixels[:600, :450].mean() - 50


def transparent_garment(size: int = 96) -> np.ndarray:
    """RGBA: a dark opaque garment, half-transparent edges, fully transparent black elsewhere."""
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[20:76, 30:66] = (30, 30, 30, 255)
    rgba[20:76, 28:30] = (30, 30, 30, 128)
    return rgba


def test_transparent_images_are_composited_on_white():
    rgba = transparent_garment()
    on_white = np.round(rgba[..., :3] * (rgba[..., 3:] / 255) + 255 * (1 - rgba[..., 3:] / 255))
    image = Image.fromarray(rgba, "RGBA")
    palette = image.convert("RGB").quantize(4)
    clear = int(palette.getpixel((0, 0)))  # the palette index of the (black) background
    uploads = {"RGBA PNG": save(image, "PNG"), "RGBA WebP": save(image, "WEBP", lossless=True),
               "LA PNG": save(image.convert("LA"), "PNG"),
               "palette PNG with a transparent index": save(palette, "PNG", transparency=clear),
               "RGB PNG with a transparent colour": save(image.convert("RGB"), "PNG", transparency=(0, 0, 0))}
    for name, data in uploads.items():
        colour = decode(data, LIMIT, 3).pixels
        gray = decode(data, LIMIT, 1).pixels
        assert colour[0, 0].tolist() == [255, 255, 255] and gray[0, 0] == 255, name  # was black: alpha dropped
        assert colour[40, 40].tolist() == [30, 30, 30] and gray[40, 40] == 30, name
        if "RGBA" in name or "LA" in name:
            assert np.abs(colour.astype(int) - on_white[..., ::-1]).max() <= 1, name  # the half-transparent edge
    big = np.kron(rgba, np.ones((30, 30, 1), np.uint8))  # 2880 px: shrunk while premultiplied
    shrunk = decode(save(Image.fromarray(big, "RGBA"), "PNG"), LIMIT, 3).pixels
    assert shrunk.shape == (1440, 1440, 3) and shrunk[0, 0].tolist() == [255, 255, 255]
    assert shrunk[600, 700].tolist() == [30, 30, 30]


def test_a_transparent_garment_is_found_and_classified(fashion):
    """A cut-out garment (alpha = the Fashion-MNIST intensity, dark on a transparent background)
    is a dark garment on a white page: found, and classified as the same garment on white."""
    trouser = fashion.test_images[np.flatnonzero(fashion.test_labels == 1)[0]]
    big = cv2.resize(trouser, (280, 280), interpolation=cv2.INTER_LINEAR)
    rgba = np.zeros((280, 280, 4), np.uint8)
    rgba[..., 3] = big
    with TestClient(create_app(ServeConfig())) as client:
        answer = client.post("/v1/classify", content=save(Image.fromarray(rgba, "RGBA"), "PNG"),
                             headers={"Content-Type": "image/png"}).json()
    expected = Predictor().predict(255 - big)  # black at the garment's alpha, on white
    assert answer["object_found"] and answer["label"] == expected.label == "Trouser"


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(ServeConfig(max_batch=8, max_pixels=LIMIT))) as c:
        yield c


def post(client, data: bytes, kind: str, query: str = ""):
    return client.post(f"/v1/classify{query}", content=data, headers={"Content-Type": kind})


def test_roi_on_large_rotated_and_shrunk_images_is_in_upload_pixels(client):
    odd = colour_scene(4001, 3001)
    turned = colour_scene(3000, 2000)
    cases = {"image/jpeg": (save(odd, "JPEG", quality=85), (4001, 3001)),  # drafted at 1/2
             "image/png": (save(odd.convert("L"), "PNG"), (4001, 3001)),  # reduced by 3
             "image/webp": (save(colour_scene(2100, 1500), "WEBP"), (2100, 1500)),  # reduced by 2
             "image/jpeg ": (save(turned, "JPEG", exif=exif(6)), (2000, 3000))}  # stored 3000x2000
    for kind, (data, (width, height)) in cases.items():
        kind = kind.strip()
        for roi in (f"0,0,{width},{height}", f"{width - 1},{height - 1},1,1", f"0,{height - 7},{width},7",
                    f"{width // 3},{height // 4},{width // 2},{height // 2}"):
            answer = post(client, data, kind, f"?roi={roi}")
            assert answer.status_code == 200, (kind, roi, answer.text)
            if answer.json()["box"]:  # found inside the roi (give or take the shrinking's rounding)
                x, y, w, h = answer.json()["box"]
                rx, ry, rw, rh = map(int, roi.split(","))
                assert rx - 3 <= x and ry - 3 <= y and x + w <= rx + rw + 3 and y + h <= ry + rh + 3, (kind, roi)
                assert x + w <= width and y + h <= height
        for roi in (f"{width},0,1,1", f"0,0,{width},{height + 1}", f"{width - 10},0,11,5"):
            outside = post(client, data, kind, f"?roi={roi}")
            assert outside.status_code == 422, (kind, roi)
            assert f"{width}x{height}" in outside.json()["detail"]  # the upload's pixels, as the user sees it
        whole = post(client, data, kind).json()
        if whole["box"]:
            x, y, w, h = whole["box"]
            assert 0 <= x and 0 <= y and x + w <= width and y + h <= height


# --- 3. off the event loop, in a bounded queue ------------------------------------------------------

def test_the_event_loop_keeps_serving_while_an_upload_is_decoded(monkeypatch):
    """A slow classification (here: 0.6 s of blocking work) must not delay /healthz: every upload,
    however small, is decoded in the worker thread."""
    import httpx

    app = create_app(ServeConfig())
    service = app.state.service
    original = service.classify_bytes

    def slow(*args):
        time.sleep(0.6)  # a costly decode or preprocessing, holding its thread
        return original(*args)

    monkeypatch.setattr(service, "classify_bytes", slow)
    png = flat_png(28, 28, 100)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            started = time.perf_counter()
            upload = asyncio.ensure_future(http.post("/v1/classify", content=png,
                                                     headers={"Content-Type": "image/png"}))
            await asyncio.sleep(0.1)  # the upload is being classified
            health = await http.get("/healthz")
            waited = time.perf_counter() - started - 0.1
            answered_first = not upload.done()
            return (await upload).status_code, health.status_code, waited, answered_first

    status, health, waited, answered_first = asyncio.run(scenario())
    assert status == 200 and health == 200
    assert answered_first and waited < 0.3, f"/healthz waited {waited:.2f} s behind an upload"


def test_a_full_queue_answers_503_with_retry_after_at_once(monkeypatch):
    import httpx

    from runtime.serve.work import WorkQueue

    app = create_app(ServeConfig())
    service = app.state.service
    service.work = WorkQueue(threads=1, max_waiting=1, max_bytes=10**9)
    release = threading.Event()
    original = service.classify_bytes

    def blocked(*args):
        release.wait(10)
        return original(*args)

    monkeypatch.setattr(service, "classify_bytes", blocked)
    png = flat_png(28, 28, 100)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            def send():
                return asyncio.ensure_future(http.post("/v1/classify", content=png,
                                                       headers={"Content-Type": "image/png"}))
            running, waiting = send(), send()  # one in the thread, one in the queue
            await asyncio.sleep(0.2)
            started = time.perf_counter()
            busy = await http.post("/v1/classify", content=png, headers={"Content-Type": "image/png"})
            waited = time.perf_counter() - started
            release.set()
            return busy, waited, (await running).status_code, (await waiting).status_code

    busy, waited, first, second = asyncio.run(scenario())
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "busy" in busy.json()["detail"]
    assert waited < 0.2  # at once, not after the queue
    assert first == second == 200  # the queued ones are served


def test_work_queue_bounds_waiting_bytes():
    from runtime.serve.errors import Busy
    from runtime.serve.work import WorkQueue

    queue = WorkQueue(threads=1, max_waiting=10, max_bytes=1000)
    gate = threading.Event()

    async def scenario():
        first = asyncio.ensure_future(queue.run(900, lambda: gate.wait(5)))  # always let in, even if large
        await asyncio.sleep(0.05)
        try:
            queue.check(200)
        except Busy as e:
            error = e
        else:
            error = None
        gate.set()
        await first
        queue.check(200)  # room again
        return error

    error = asyncio.run(scenario())
    assert error is not None and error.status == 503 and error.retry_after == 1  # what routes answer: 503, Retry-After


# --- 4. a batch's pixel budget, images prepared as they come ------------------------------------------

def test_batch_pixels_are_budgeted_as_a_whole():
    config = ServeConfig(max_pixels=1_000_000, max_batch=8)  # budget: 4 x max_pixels
    with TestClient(create_app(config)) as client:
        image = flat_png(1000, 1000, 40)

        def batch(count: int):
            return client.post("/v1/classify/batch", files=[("image", (f"{i}.png", image)) for i in range(count)])

        assert batch(4).status_code == 200
        over = batch(5)
        assert over.status_code == 413
        assert over.json()["detail"].startswith("image 5: the batch's images add up to more than 4,000,000 pixels")
    with TestClient(create_app(ServeConfig(max_pixels=1_000_000, max_batch_pixels=2_500_000))) as client:
        files = [("image", (f"{i}.png", flat_png(1000, 1000, 40))) for i in range(3)]
        assert client.post("/v1/classify/batch", files=files).status_code == 413


def test_a_batch_answers_as_each_image_alone(client, fashion):
    """Batch images are prepared for the model as they are decoded; the answers are the same as
    one by one (labels, probabilities, whether and where an object was found)."""
    rng = np.random.default_rng(4)
    frames = [render(fashion.test_images[i], rng) for i in range(3)]
    uploads = [save(Image.fromarray(fashion.test_images[5]), "PNG"),
               *[save(Image.fromarray(f[..., ::-1]), "JPEG", quality=90) for f in frames],
               flat_png(300, 200, 128),  # nothing to find
               save(colour_scene(2400, 1600), "PNG")]
    files = [("image", (f"{i}", data)) for i, data in enumerate(uploads)]
    batch = client.post("/v1/classify/batch?top_k=10", files=files)
    assert batch.status_code == 200, batch.text
    for i, (data, result) in enumerate(zip(uploads, batch.json()["results"])):
        alone = client.post("/v1/classify?top_k=10", files={"image": ("x", data)}).json()
        assert result["label"] == alone["label"] and result["object_found"] == alone["object_found"]
        assert result["box"] == alone["box"]
        if i == 0:  # 28x28: alone, the uint8 fast path; in a mixed batch, as floats (as before)
            continue
        confidences = {item["label"]: item["confidence"] for item in alone["top_k"]}
        for item in result["top_k"]:  # prepared early, the same model input
            assert item["confidence"] == pytest.approx(confidences[item["label"]], abs=2e-5)
    assert [r["object_found"] for r in batch.json()["results"]][4] is False


# --- 5. the CLI at the edges ------------------------------------------------------------------------

def test_cli_refuses_truncated_images_and_says_nothing_found(tmp_path, fashion):
    frame = render(fashion.test_images[0], np.random.default_rng(3))
    jpeg = cv2.imencode(".jpg", frame)[1].tobytes()
    png = cv2.imencode(".png", frame)[1].tobytes()
    files = {"cut.jpg": jpeg[:len(jpeg) // 2], "cut.png": png[:len(png) // 2], "whole.jpg": jpeg,
             "blank.png": cv2.imencode(".png", np.full((120, 160), 128, np.uint8))[1].tobytes(),
             "cutout.png": save(Image.fromarray(transparent_garment(), "RGBA"), "PNG")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    run = subprocess.run([sys.executable, "-m", "runtime", *(str(tmp_path / n) for n in files)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 1  # some files could not be classified
    assert "cut.jpg: truncated JPEG" in run.stderr and "cut.png: truncated PNG" in run.stderr
    lines = dict(line.split(": ", 1) for line in run.stdout.splitlines())
    assert set(lines) == {str(tmp_path / n) for n in ("whole.jpg", "blank.png", "cutout.png")}
    assert lines[str(tmp_path / "blank.png")].startswith("nothing found")
    assert not lines[str(tmp_path / "whole.jpg")].startswith("nothing found")
    run = subprocess.run([sys.executable, "-m", "runtime", "--json", str(tmp_path / "blank.png"),
                          str(tmp_path / "cutout.png"), str(tmp_path / "whole.jpg")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    blank, cutout, whole = (json.loads(line) for line in run.stdout.splitlines())
    assert blank["object_found"] is False and whole["object_found"] is True
    rgba = transparent_garment().astype(np.float32)
    on_white = np.round(rgba[..., :3] * rgba[..., 3:] / 255 + 255 * (1 - rgba[..., 3:] / 255)).astype(np.uint8)
    expected = Predictor().predict(on_white)  # composited on white, as the server does
    assert cutout["object_found"] and cutout["label"] == expected.label
    assert cutout["confidence"] == pytest.approx(expected.confidence, abs=1e-4)


def test_cli_reads_a_jpeg_turned_as_its_exif_says(tmp_path):
    picture = colour_scene(300, 200)
    (tmp_path / "turned.jpg").write_bytes(save(picture, "JPEG", exif=exif(6), quality=95))
    from runtime.images import load

    image = load(tmp_path / "turned.jpg")
    assert image.shape[:2] == (300, 200)  # portrait, as the phone showed it
    expected = decode(save(picture, "JPEG", exif=exif(6), quality=95), LIMIT, 3).pixels
    assert np.array_equal(image, expected)  # the CLI's reader is the server's


# --- 6. a real one-worker server under abuse: /healthz answers, memory stays bounded -------------------

def status_kb(pid: int, field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1))


@pytest.fixture(scope="module")
def one_worker(start_server):
    return start_server("--workers", "1")


def abuse() -> list[tuple[str, bytes, str]]:
    """(name, body, content type): each small, each costly before the fix; the last ones allowed but slow."""
    progressive = save(Image.new("L", (64, 64), 128), "JPEG", progressive=True)
    colour_16mp = save(colour_scene(4000, 4000), "PNG", compress_level=1)
    return [("4 x 4,000,000 PNG", flat_png(4, 4_000_000), "image/png"),
            ("4000x4000 RLE8 BMP", rle_bmp(4000, 4000), "image/bmp"),
            ("16000x11000 progressive JPEG", claiming(progressive, 16000, 11000), "image/jpeg"),
            ("20000x20000 PNG", flat_png(20000, 20000), "image/png"),
            ("16 MP colour PNG", colour_16mp, "image/png"),
            ("16 MP progressive JPEG", save(colour_scene(4000, 4000), "JPEG", progressive=True), "image/jpeg"),
            ("1 MP RLE8 BMP", rle_bmp(1000, 1000), "image/bmp"),
            ("4 MP WebP", save(colour_scene(2000, 2000), "WEBP", quality=80), "image/webp")]


def test_abuse_neither_stalls_healthz_nor_grows_the_worker(one_worker):
    import httpx

    url, process = one_worker
    pid = process.pid  # one worker: uvicorn serves in the process itself
    requests = abuse()
    bomb = flat_png(4000, 4000)  # 16 KB, 16 MP
    batches = [("image", (f"{i}.png", bomb, "image/png")) for i in range(32)]  # 0.5 MB, 512 MP
    allowed = [("image", (f"{i}.png", bomb, "image/png")) for i in range(4)]  # 64 MP: the budget
    answers, latencies, done = {}, [], threading.Event()

    def attack():
        with httpx.Client(timeout=60) as http:
            for name, body, kind in requests:
                answers[name] = http.post(f"{url}/v1/classify", content=body, headers={"Content-Type": kind})

            def batch(files, key):
                answers[key] = http.post(f"{url}/v1/classify/batch", files=files)
            threads = [threading.Thread(target=batch, args=(files, f"batch {i}"))
                       for i, files in enumerate([batches] * 4 + [allowed] * 2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        done.set()

    attacker = threading.Thread(target=attack)
    with httpx.Client(timeout=10) as health:
        attacker.start()
        for _ in range(3000):  # bounded: at most 3000 probes, 20 ms apart
            started = time.perf_counter()
            assert health.get(f"{url}/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
            if done.wait(0.02):
                break
    attacker.join(60)
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses["4 x 4,000,000 PNG"] == 422
    for name in ("4000x4000 RLE8 BMP", "16000x11000 progressive JPEG", "20000x20000 PNG"):
        assert statuses[name] == 413, (name, answers[name].text)
    for name in ("16 MP colour PNG", "16 MP progressive JPEG", "1 MP RLE8 BMP", "4 MP WebP", "batch 4", "batch 5"):
        assert statuses[name] == 200, (name, answers[name].text)
    for i in range(4):
        assert statuses[f"batch {i}"] in (413, 503)  # over the batch budget (or, queued too many, busy)
    peak, kept = status_kb(pid, "VmHWM") / 1024, status_kb(pid, "VmRSS") / 1024
    print(f"/healthz: {len(latencies)} probes, slowest {max(latencies) * 1000:.0f} ms; worker peak {peak:.0f} MB, "
          f"kept {kept:.0f} MB")
    assert len(latencies) >= 10 and max(latencies) < 0.5, f"/healthz waited {max(latencies):.2f} s"
    assert peak < 1024, f"the worker peaked at {peak:.0f} MB"
    assert kept < 600, f"the worker kept {kept:.0f} MB"


FAULTS = """
import io, resource, sys
import numpy as np
from PIL import Image
from runtime.images import decode
from runtime.serve.memory import reuse_freed_memory
if sys.argv[1] == "reuse":
    reuse_freed_memory()
frame = io.BytesIO()
Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), np.uint8)).save(frame, "JPEG")
for _ in range(5):
    decode(frame.getvalue())
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    decode(frame.getvalue())
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 40)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_worker_reuses_freed_arrays_instead_of_mapping_them_again():
    """glibc maps and unmaps every large array; a worker keeps them on its heap: a 640x480 frame's decoding
    no longer costs hundreds of page faults (each a zeroed 4 KB page: half its CPU time)."""
    faults = {mode: float(subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True,
                                         check=True, cwd=ROOT).stdout) for mode in ("default", "reuse")}
    assert faults["default"] > 200 and faults["reuse"] < 20, faults
