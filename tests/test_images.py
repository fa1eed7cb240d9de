"""One image reader: the same file gives the same model input, hence the same answer, at every entry point
(python -m runtime, the HTTP API, the training folder loader, the camera demo's folder source), whatever its
kind: 16-bit, palette, CMYK, EXIF-rotated, transparent, gray, bilevel, large."""

import io
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import Predictor, image_costs, images
from runtime.preprocess import prepare

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = np.load(ROOT / "camera_demo" / "samples.npz")
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp", ".bmp": "image/bmp"}


def garment(index: int, size: tuple[int, int], tint=(1.0, 1.0, 1.0)) -> np.ndarray:
    """A bundled test garment, enlarged to ``size`` (height, width), dark on a light, tinted backdrop (RGB)."""
    image = Image.fromarray(255 - SAMPLES["images"][index]).resize(size[::-1], Image.Resampling.BILINEAR)
    return np.clip(np.asarray(image, np.float32)[..., None] * np.float32(tint), 0, 255).astype(np.uint8)


def exif(orientation: int) -> Image.Exif:
    data = Image.Exif()
    data[0x0112] = orientation
    return data


def write_files(folder: Path) -> list[Path]:
    """One file of every kind the reader has a rule for."""
    import cv2

    folder.mkdir(parents=True)
    rgb = garment(3, (120, 100), (1.0, 0.9, 0.8))
    gray = garment(7, (90, 90))[..., 0]
    alpha = np.where(gray < 200, 255, np.where(gray < 230, 128, 0)).astype(np.uint8)
    files = {
        "gray.png": lambda p: Image.fromarray(gray).save(p),
        "gray.jpg": lambda p: Image.fromarray(gray).save(p, quality=90),
        "sixteen.png": lambda p: Image.fromarray(gray.astype(np.uint16) * 257 + 100).save(p),  # I;16
        "sixteen_rgb.png": lambda p: cv2.imwrite(str(p), rgb[..., ::-1].astype(np.uint16) * 257 + 77),
        "bilevel.png": lambda p: Image.fromarray(gray).convert("1").save(p),
        "palette.png": lambda p: Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(p),
        "palette_clear.png": lambda p: Image.fromarray(gray).convert("P").save(p, transparency=255),
        "rgba.png": lambda p: Image.fromarray(np.dstack([rgb[:90, :90], alpha]), "RGBA").save(p),
        "la.png": lambda p: Image.fromarray(np.dstack([gray, alpha]), "LA").save(p),
        "cmyk.jpg": lambda p: Image.fromarray(rgb).convert("CMYK").save(p, quality=92),
        "turned.jpg": lambda p: Image.fromarray(rgb).save(p, quality=92, exif=exif(6)),
        "turned.png": lambda p: Image.fromarray(rgb).save(p, exif=exif(8)),
        "large.jpg": lambda p: Image.fromarray(garment(5, (2400, 3000))[..., 0]).convert("RGB").save(p, quality=85),
        "colour.webp": lambda p: Image.fromarray(rgb).save(p, lossless=True),
        "colour.bmp": lambda p: Image.fromarray(rgb).save(p),
    }
    for name, save in files.items():
        save(folder / name)
    return [folder / name for name in files]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    return write_files(tmp_path_factory.mktemp("kinds") / "a")


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


def model_input(pixels: np.ndarray, predictor: Predictor) -> np.ndarray:
    return prepare(pixels, predictor.contract).image


def test_the_rules(files):
    pixels = {path.name: images.load(path) for path in files}
    assert pixels["gray.png"].ndim == 2 and pixels["sixteen.png"].ndim == 2 and pixels["la.png"].ndim == 2
    assert pixels["rgba.png"].ndim == 3 and pixels["cmyk.jpg"].ndim == 3 and pixels["palette.png"].ndim == 3
    assert np.array_equal(pixels["sixteen.png"], ((pixels["gray.png"].astype(np.uint16) * 257 + 100) >> 8))
    assert pixels["turned.jpg"].shape[:2] == (100, 120) and pixels["turned.png"].shape[:2] == (100, 120)
    assert max(pixels["large.jpg"].shape) < 2 * images.WORK_SIDE  # shrunk as it is decoded
    assert pixels["palette_clear.png"].max() == 255 and pixels["la.png"][0, 0] == 255  # transparent: white
    gray = np.asarray(Image.open(files[0]))
    assert np.array_equal(pixels["colour.bmp"][..., ::-1], np.asarray(Image.open(files[-1])))  # BGR
    assert np.array_equal(pixels["gray.png"], gray)


def test_every_entry_point_gives_the_same_answer(files, predictor):
    """python -m runtime and the HTTP API: label, confidence and top 3 for every file."""
    from fastapi.testclient import TestClient

    from runtime.serve import ServeConfig, create_app

    run = subprocess.run([sys.executable, "-m", "runtime", "--json", *map(str, files)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    cli = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(cli) == len(files)
    with TestClient(create_app(ServeConfig())) as client:
        for path, answer in zip(files, cli):
            response = client.post("/v1/classify?top_k=3", content=path.read_bytes(),
                                   headers={"Content-Type": MIME[path.suffix]})
            assert response.status_code == 200, (path.name, response.text)
            served = response.json()
            direct = predictor.predict(images.load(path))
            assert served["label"] == answer["label"] == direct.label, path.name
            assert served["confidence"] == pytest.approx(answer["confidence"], abs=1e-4), path.name
            assert [t["label"] for t in served["top_k"]] == [t["label"] for t in answer["top_k"]], path.name
            assert [t["confidence"] for t in served["top_k"]] == pytest.approx(
                [t["confidence"] for t in answer["top_k"]], abs=1e-4), path.name


def test_the_server_the_demo_and_training_feed_the_model_the_same_input(files, predictor, tmp_path):
    from camera_demo.sources import ImageDirSource
    from runtime.serve import ServeConfig, Service

    expected = [model_input(images.load(path), predictor) for path in files]

    service = Service(ServeConfig())  # the HTTP API's decoding, without HTTP
    for path, want in zip(files, expected):
        assert np.array_equal(model_input(service.decode(path.read_bytes()).pixels, predictor), want), path.name

    source = ImageDirSource(files[0].parent)  # the camera demo's --source DIR: BGR frames, in name order
    by_name = {path.name: want for path, want in zip(files, expected)}
    for path in sorted(files):
        frame = source.read()
        assert frame.ndim == 3 and np.array_equal(frame, images.load(path, channels=3)), path.name
        assert np.array_equal(model_input(frame, predictor), by_name[path.name]), path.name
    assert source.read() is None

    pytest.importorskip("tensorflow")
    from train.folders import load_folder

    root = tmp_path / "folder"
    root.mkdir()
    for label in ("a", "b"):  # two classes (training needs two), the same files
        (root / label).mkdir()
        for path in files:
            (root / label / path.name).write_bytes(path.read_bytes())
    contract = predictor.contract
    data = load_folder(root, image_size=contract.height, color="gray", preprocess=contract.preprocessing)
    assert data.skipped == []
    trained = data.train_images[data.train_labels == 0]
    for path, image in zip(sorted(files), trained):
        want = np.clip(np.round(by_name[path.name][..., 0] * 255), 0, 255).astype(np.uint8)
        assert np.array_equal(image, want), path.name


def test_a_base_install_reads_files_without_opencv(files, tmp_path):
    """python -m runtime needs neither OpenCV nor TensorFlow to read and classify a PNG or JPEG."""
    blocker = tmp_path / "no_cv2"
    blocker.mkdir()
    (blocker / "cv2.py").write_text("raise ImportError('OpenCV is not installed')\n")
    pngs = [str(p) for p in files if p.name in ("gray.png", "turned.jpg", "rgba.png")]
    run = subprocess.run([sys.executable, "-m", "runtime", "--json", *pngs], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={"PYTHONPATH": f"{blocker}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    assert [a["image"] for a in answers] == pngs and all(a["label"] for a in answers)


@pytest.mark.parametrize("data, status", [(b"", 400), (b"not an image", 415),
                                          (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", 415)])
def test_what_is_not_an_image_is_refused_alike(data, status, tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(data)
    with pytest.raises(images.BadImage) as refused:
        images.load(path)
    assert refused.value.status == status and str(path) in str(refused.value)


def test_files_that_are_not_regular_are_never_read(tmp_path):
    import os

    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    with pytest.raises(images.BadImage, match="FIFO"):
        images.load(fifo)  # returns at once: opened non-blocking, refused from fstat
    with pytest.raises(images.BadImage, match="folder"):
        images.load(tmp_path)
    sparse = tmp_path / "sparse.png"
    with open(sparse, "wb") as f:
        f.truncate(images.MAX_BYTES + 1)
    with pytest.raises(images.BadImage, match="not read"):
        images.load(sparse)


def test_a_truncated_file_is_refused(files):
    for path in files[:2]:  # a PNG and a JPEG, cut short
        with pytest.raises(images.BadImage, match=f"truncated {path.suffix[1:].upper().replace('JPG', 'JPEG')}"):
            images.decode(path.read_bytes()[: len(path.read_bytes()) * 2 // 3])


def test_a_small_file_that_decodes_big_is_refused_from_its_header(tmp_path):
    path = tmp_path / "big.png"
    buffer = io.BytesIO()
    Image.new("RGBA", (8000, 8000)).save(buffer, "PNG")  # 64 MP in a few hundred KB
    path.write_bytes(buffer.getvalue())
    with pytest.raises(images.BadImage, match="limit"):
        images.load(path)


def test_gray_without_opencv_is_opencv_s_gray(monkeypatch):
    """Every colour: the base install (no OpenCV) makes the same gray as OpenCV does."""
    cv2 = pytest.importorskip("cv2")
    from runtime.preprocess import pixels

    every = np.arange(1 << 24, dtype=np.uint32)
    bgr = np.stack([every >> 16, (every >> 8) & 255, every & 255], -1).astype(np.uint8).reshape(4096, 4096, 3)
    monkeypatch.setattr(pixels, "cv2", None)
    assert np.array_equal(pixels.to_gray(bgr), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


def encoded(image: Image.Image, kind: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def test_files_of_more_pieces_than_any_encoder_writes_are_refused_before_pillow_reads_them():
    """Pillow reads a PNG's chunks and a JPEG's segments in a Python loop (and keeps JPEG segments): a small file
    of many empty ones costs seconds and gigabytes; libjpeg skips junk before a marker, so counting must too."""
    jpeg = encoded(Image.new("RGB", (64, 48), (90, 120, 150)), "JPEG")
    spam = jpeg[:2] + b"\xff\xfe\x00\x02" * 600 + jpeg[2:]  # 600 empty comment segments
    with pytest.raises(images.BadImage, match="segments"):
        images.decode(spam)
    scans = b"\xff\xd8" + b"\x00" + (b"\xff\xda\x00\x02" + b"\x11" * 4) * 100 + b"\xff\xd9"  # junk, then 100 scans
    assert image_costs.jpeg_segments(scans)[0] > image_costs.MAX_JPEG_SCANS
    with pytest.raises(images.BadImage, match="scans"):
        images.decode(scans)
    png = encoded(Image.new("L", (64, 48), 90), "PNG")
    empty = b"\x00\x00\x00\x00abCd" + (0x7C5A4C0F).to_bytes(4, "big")  # an empty ancillary chunk
    with pytest.raises(images.BadImage, match="chunks"):
        images.decode(png[:33] + empty * 200 + png[33:])
    assert images.decode(jpeg).pixels.shape == (48, 64, 3) and images.decode(png).pixels.shape == (48, 64)


def test_an_rle_bmp_larger_than_its_pixels_could_need_is_refused():
    header = bytearray(encoded(Image.new("P", (100, 100), 3), "BMP"))
    header[30:34] = (1).to_bytes(4, "little")  # BI_RLE8
    body = b"\x00\x00" * 100_000 + b"\x00\x01"  # end-of-line escapes only: no pixel, much work
    data = bytes(header[:int.from_bytes(header[10:14], "little")]) + body
    with pytest.raises(images.BadImage, match="more than its pixels could need"):
        images.decode(data)


def test_a_transparent_gray_level_of_a_16_bit_png_is_white():
    gray = (np.arange(40 * 30).reshape(40, 30) % 200 * 300).astype(np.uint16)
    gray[:5] = 51400
    pixels = images.decode(encoded(Image.fromarray(gray), "PNG", transparency=51400)).pixels
    assert pixels.ndim == 2 and (pixels[:5] == 255).all() and np.array_equal(pixels[5:], gray[5:] >> 8)


def plain_variants(folder: Path) -> dict[str, bytes]:
    """PNGs that OpenCV decodes for the reader: gray and RGB, small and at the working size, several IDAT
    chunks, a resolution (pHYs), Adam7 interlace (ImageMagick, if any)."""
    import shutil

    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (1024, 1024, 3), np.uint8)  # incompressible: several IDAT chunks
    found = {"gray 28": save_png(Image.fromarray(SAMPLES["images"][0])),
             "rgb dpi": save_png(Image.fromarray(garment(4, (300, 200), (0.9, 1.0, 0.8))), dpi=(72, 72)),
             "rgb noise 1024": save_png(Image.fromarray(noise), compress_level=1),
             "gray 1x1000": save_png(Image.fromarray(rng.integers(0, 256, (1000, 1), np.uint8)))}
    if shutil.which("convert"):
        (folder / "flat.png").write_bytes(save_png(Image.fromarray(noise[:48, :64])))
        subprocess.run(["convert", str(folder / "flat.png"), "-strip", "-interlace", "PNG",
                        f"PNG24:{folder / 'adam7.png'}"], check=True)
        found["rgb adam7"] = (folder / "adam7.png").read_bytes()
        assert found["rgb adam7"][28] == 1  # IHDR's interlace method
    return found


def save_png(image: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", **options)
    return out.getvalue()


def test_plain_pngs_are_decoded_by_opencv_to_pillow_s_pixels(monkeypatch, tmp_path, capfd):
    """The one fast path of the reader gives what Pillow gives, bit for bit, gray or BGR alike."""
    for name, data in plain_variants(tmp_path).items():
        assert images.plain_png(data), name
        fast = images.decode(data)
        with monkeypatch.context() as m:
            m.setattr(images, "cv2", None)
            slow = images.decode(data)
        assert (fast.pixels.shape, fast.size, fast.scale, fast.lossy) == (slow.pixels.shape, slow.size, 1.0, False)
        assert np.array_equal(fast.pixels, slow.pixels), name
        for channels in (1, 3):
            assert np.array_equal(images.decode(data, channels=channels).pixels,
                                  np.asarray(prepare_channels(slow.pixels, channels))), (name, channels)
    assert capfd.readouterr().err == ""  # libpng said nothing


def prepare_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    from runtime.preprocess import to_gray

    if channels == 1:
        return to_gray(pixels) if pixels.ndim == 3 else pixels
    return pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)


def test_pngs_that_are_not_plain_go_to_pillow(files, capfd):
    """Transparency, EXIF, text, a colour profile, 16 bits, palettes, bilevel, anything to shrink: Pillow's."""
    for name in ("sixteen.png", "sixteen_rgb.png", "bilevel.png", "palette.png", "palette_clear.png", "rgba.png",
                 "la.png", "turned.png"):
        assert images.plain_png(next(f for f in files if f.name == name).read_bytes()) is None, name
    text = __import__("PIL.PngImagePlugin", fromlist=["PngInfo"]).PngInfo()
    text.add_text("Comment", "made by a test")
    gray = Image.fromarray(SAMPLES["images"][1])
    for options in ({"transparency": 0}, {"pnginfo": text}, {"icc_profile": b"too short"}):  # tRNS, tEXt, iCCP
        data = save_png(gray, **options)
        assert images.plain_png(data) is None and images.decode(data).pixels.shape == (28, 28), options
    assert capfd.readouterr().err == ""  # Pillow decodes them without a word (libpng would warn about iCCP)
    large = io.BytesIO()
    Image.fromarray(np.zeros((600, images.WORK_SIDE + 1), np.uint8)).save(large, "PNG")
    assert images.plain_png(large.getvalue()) is None
    assert images.decode(large.getvalue()).pixels.shape == (600, images.WORK_SIDE + 1)


def test_a_damaged_plain_png_gets_pillow_s_answer(monkeypatch):
    """A bad CRC, a cut file, or intact chunks around a broken zlib stream: what Pillow makes of it, no more."""
    out = io.BytesIO()
    Image.fromarray(SAMPLES["images"][2]).save(out, "PNG")
    data = out.getvalue()
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4:idat], "big")
    broken_stream = bytearray(data)
    broken_stream[idat + 10:idat + 14] = b"\xff\xff\xff\xff"
    broken_stream[idat + 4 + length:idat + 8 + length] = zlib.crc32(bytes(broken_stream[idat:idat + 4 + length])
                                                                     ).to_bytes(4, "big")
    bad_crc = bytearray(data)
    bad_crc[idat + 4 + length] ^= 1
    for damaged in (bytes(bad_crc), data[:-12], data[:idat + 20], bytes(broken_stream)):
        with monkeypatch.context() as m:
            m.setattr(images, "cv2", None)
            try:
                expected = images.decode(damaged).pixels
            except images.BadImage as e:
                expected = (e.status, str(e))
        try:
            got = images.decode(damaged).pixels
        except images.BadImage as e:
            got = (e.status, str(e))
        assert type(got) is type(expected) and np.array_equal(got, expected) if isinstance(got, np.ndarray) \
            else got == expected
    assert images.plain_png(bytes(broken_stream)) and not images.plain_png(bytes(bad_crc))
