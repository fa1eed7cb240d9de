"""Collecting training images (DIR/LABEL/*.png): labels, the camera demo's --collect, and the server's
POST /v1/collect (in-process)."""

import io
import json
import os
import re
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
from runtime.collect import LABEL_PATTERN, MAX_LABEL_BYTES, check_label, count_images, forbidden  # noqa: E402
from runtime.collect import new_image_path  # noqa: E402
from test_folders import JUNK_LABELS, REFUSED_LABELS  # noqa: E402  (what training refuses or skips, tested there too)

ROOT = Path(__file__).parents[1]
GOOD_LABELS = ["red cup", "T-shirt", "Ärmel 2", "靴", "a", "x" * 64, "a.b", "😀" * 63]
BAD_LABELS = ["", ".", "..", ".hidden", "a/b", "a\\b", "tab\there", "new\nline", "nul\x00", "x" * 65, " lead",
              "trail ", "😀" * 64,  # the last: 256 bytes in UTF-8, more than a folder name may take
              *REFUSED_LABELS, *JUNK_LABELS, "des\u212atop.ini", "thumbs.db\u00ad", "\U000e0001x", "x\U000f0000",
              "caf\udce9"]  # the last: a folder name that is not UTF-8, as Python reads it


@pytest.mark.parametrize("label", GOOD_LABELS)
def test_good_labels_are_kept_as_they_are(label):
    assert check_label(label) == label


@pytest.mark.parametrize("label", BAD_LABELS)
def test_bad_labels_are_refused(label):
    with pytest.raises(ValueError):
        check_label(label)


def test_an_nfd_label_is_stored_as_nfc():
    assert check_label("cafe\u0301") == "café" and check_label("A\u0308rmel") == "Ärmel"


def test_the_refused_characters_are_unicode_other_and_separators_but_the_space():
    """``forbidden`` is the rule as said: categories C* and Z* (but U+0020), and / and \\; on every code point."""
    import unicodedata

    wrong = [hex(code) for code in range(sys.maxunicode + 1)
             if forbidden(chr(code)) != (chr(code) in "/\\" or chr(code) != " "
                                         and unicodedata.category(chr(code))[0] in "CZ")]
    assert not wrong


def test_the_schema_pattern_is_the_rule():
    """LABEL_PATTERN (the API schema's) accepts what check_label accepts: any code point inside a label, and the
    labels above (but the byte limit, which the schema cannot say)."""
    pattern = re.compile(LABEL_PATTERN)
    wrong = [hex(code) for code in range(sys.maxunicode + 1)
             if bool(pattern.fullmatch(f"a{chr(code)}b")) == forbidden(chr(code))]
    assert not wrong
    for label in GOOD_LABELS + BAD_LABELS + ["cafe\u0301", "trains", "my test", "x.db"]:
        if len(label.encode("utf-8", "surrogatepass")) <= MAX_LABEL_BYTES:
            assert bool(pattern.fullmatch(label)) == accepted(label), repr(label)


def accepted(label: str) -> bool:
    try:
        check_label(label)
    except ValueError:
        return False
    return True


def test_names_are_generated_and_never_taken(tmp_path):
    first = new_image_path(tmp_path, "red cup", 7)
    assert first.parent == tmp_path and first.name.startswith("red cup_") and first.name.endswith("_0007.png")
    first.write_bytes(b"x")
    second = new_image_path(tmp_path, "red cup", 7)
    assert second != first and second.name.endswith("_0008.png")
    assert new_image_path(tmp_path, "red cup", 1, unique=True) != new_image_path(tmp_path, "red cup", 1, unique=True)
    long = new_image_path(tmp_path, "é" * 64, 1)
    assert len(long.name.encode()) < 100  # the label is shortened in file names
    (tmp_path / ".red cup_x.partial.png").write_bytes(b"x")  # atomic_path's temporary file: not counted
    assert count_images(tmp_path) == 1 and count_images(tmp_path / "missing") == 0


# --- the camera demo -----------------------------------------------------------------------------

def run_demo(*args):
    return subprocess.run([sys.executable, "-m", "camera_demo", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_headless_demo_saves_every_nth_roi_crop(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(2)
    for i in range(5):
        cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    out = tmp_path / "data"
    result = run_demo("--source", images, "--headless", "--collect", out, "--label", "red cup",
                      "--collect-every", "2", "--roi", "8,4,40,30")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    frames, summary = lines[:-1], lines[-1]
    saved = sorted((out / "red cup").glob("*.png"))
    assert len(saved) == 2 and summary["collected"] == 2
    assert [Path(f["saved"]) for f in frames if "saved" in f] == saved
    assert [f["frame"] for f in frames if "saved" in f] == [2, 4]
    originals = sorted(images.glob("*.png"))
    for path, original in zip(saved, (originals[1], originals[3])):
        crop = cv2.imread(str(path))
        assert crop.shape == (30, 40, 3)  # the roi, not the frame; without the overlay
        np.testing.assert_array_equal(crop, cv2.imread(str(original))[4:34, 8:48])
    assert not list((out / "red cup").glob(".*"))  # no temporary file left
    # without --roi, a file source is collected whole
    result = run_demo("--source", images, "--headless", "--collect", out, "--label", "red cup",
                      "--collect-every", "5")
    assert result.returncode == 0, result.stderr
    assert len(list((out / "red cup").glob("*.png"))) == 3  # added, nothing overwritten
    newest = max((out / "red cup").glob("*.png"), key=lambda p: p.stat().st_mtime_ns)
    assert cv2.imread(str(newest)).shape == (60, 80, 3)


@pytest.mark.parametrize("label", ["..", "a/b", "", ".hidden", "x" * 65])
def test_a_bad_label_is_a_usage_error(label, capsys):
    from camera_demo.__main__ import parse_args

    with pytest.raises(SystemExit) as stop:
        parse_args(["--collect", "somewhere", "--label", label])
    assert stop.value.code == 2 and "--label" in capsys.readouterr().err


def test_collect_flags_go_together(capsys):
    from camera_demo.__main__ import parse_args

    for argv in (["--collect", "d"], ["--label", "x"], ["--collect", "d", "--label", "x", "--collect-every", "0"]):
        with pytest.raises(SystemExit) as stop:
            parse_args(argv)
        assert stop.value.code == 2
    args = parse_args(["--collect", "d", "--label", "red cup"])
    assert args.label == "red cup" and args.collect_every == 10


def test_bad_label_and_unwritable_folder_exit_2_before_the_camera(tmp_path):
    result = run_demo("--source", "7", "--headless", "--collect", tmp_path, "--label", "../escape")
    assert result.returncode == 2 and "--label" in result.stderr
    blocked = tmp_path / "a-file"
    blocked.write_text("in the way")
    result = run_demo("--source", "7", "--headless", "--collect", blocked, "--label", "shirt")
    assert result.returncode == 2 and "cannot write" in result.stderr
    assert "camera" not in result.stderr  # said before the camera (there is none at index 7) was tried
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        result = run_demo("--source", "7", "--headless", "--collect", locked, "--label", "shirt")
        assert result.returncode == 2 and "cannot write" in result.stderr


class LiveCamera:
    live = True
    name = "test camera"

    def read(self):
        return np.full((480, 640, 3), 128, np.uint8)

    def close(self):
        pass


def test_c_key_saves_the_clean_guide_box_crop(tmp_path, monkeypatch):
    """In the window, c saves the guide box's crop as it was before the overlay was drawn."""
    import camera_demo.__main__ as demo_module
    from camera_demo.__main__ import Demo, handle_key, parse_args
    from runtime import Predictor

    assert handle_key(ord("c")) == "collect"
    shown = []
    monkeypatch.setattr(demo_module.cv2, "imshow", lambda name, frame: shown.append(frame.copy()))
    keys = iter([ord("c"), 255, ord("c")])
    monkeypatch.setattr(demo_module.cv2, "waitKey", lambda delay: next(keys))
    args = parse_args(["--collect", str(tmp_path), "--label", "red cup"])
    with ExitStack() as resources:
        demo = Demo(args, Predictor(), LiveCamera(), resources)
        for _ in range(3):
            assert demo.on_frame(LiveCamera().read(), time.perf_counter()) is None
    saved = sorted((tmp_path / "red cup").glob("*.png"))
    assert len(saved) == demo.collected == 2
    crop = cv2.imread(str(saved[0]))
    assert crop.shape == (384, 384, 3) and (crop == 128).all()  # the guide box, no amber frame drawn in it
    # the overlay counts what was saved (drawn before the key of that frame was read)
    assert not (shown[0] == shown[2]).all()


# --- the server ------------------------------------------------------------------------------------

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from runtime.serve import ServeConfig, create_app  # noqa: E402


def png(height=50, width=40, channels=3, seed=0) -> bytes:
    from PIL import Image

    shape = (height, width, channels) if channels == 3 else (height, width)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def post(client, label, data, headers=None, kind="image/png"):
    return client.post("/v1/collect", params=None if label is None else {"label": label}, content=data,
                       headers={"Content-Type": kind, **(headers or {})})


@pytest.fixture(scope="module")
def collect_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("collected")


@pytest.fixture(scope="module")
def client(collect_dir):
    with TestClient(create_app(ServeConfig(collect=str(collect_dir), collect_max=3, collect_max_labels=4))) as c:
        yield c


def test_collect_is_404_unless_enabled():
    with TestClient(create_app(ServeConfig())) as plain:
        assert post(plain, "shirt", png()).status_code == 404
        assert plain.get("/v1/model").json()["collect"] is False
        assert "/v1/collect" not in plain.get("/openapi.json").json()["paths"]


def test_collect_saves_an_image_re_encoded(client, collect_dir):
    from PIL import Image

    assert client.get("/v1/model").json()["collect"] is True
    jpeg = cv2.imencode(".jpg", np.full((60, 90, 3), 200, np.uint8))[1].tobytes()
    answer = post(client, "red cup", jpeg, kind="image/jpeg")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["label"] == "red cup" and body["count"] == 1 and body["saved"].startswith("red cup/")
    saved = collect_dir / body["saved"]
    assert saved.parent == collect_dir / "red cup" and saved.suffix == ".jpg"  # lossy stays lossy
    assert saved.read_bytes() != jpeg  # encoded again: never the client's bytes
    with Image.open(saved) as image:
        assert image.format == "JPEG" and image.size == (90, 60) and image.mode == "RGB"  # colour, for any model
    form = client.post("/v1/collect", params={"label": "red cup"}, files={"image": ("f.png", png(), "image/png")})
    assert form.status_code == 201 and form.json()["count"] == 2 and form.json()["saved"].endswith(".png")
    with Image.open(collect_dir / form.json()["saved"]) as image:
        assert image.format == "PNG" and image.size == (40, 50) and image.mode == "RGB"
    assert not list((collect_dir / "red cup").glob(".*"))


def test_stored_images_are_about_as_large_as_the_uploads(tmp_path):
    """A lossy photo (JPEG, lossy WebP) stored losslessly takes many times its upload: it stays lossy."""
    from PIL import Image

    rng = np.random.default_rng(4)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (1000, 1300, 3), dtype=np.uint8), (3, 3), 0)
    uploads = {}
    for kind, options in (("WEBP", {"quality": 80}), ("JPEG", {"quality": 90}), ("PNG", {}),
                          ("WEBP", {"lossless": True})):
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, kind, **options)
        uploads[f"{kind} {options}"] = buffer.getvalue()
    with TestClient(create_app(ServeConfig(collect=str(tmp_path)))) as c:
        for name, data in uploads.items():
            answer = post(c, "photo", data, kind="image/webp" if "WEBP" in name else "image/jpeg")
            assert answer.status_code == 201, (name, answer.text)
            stored = (tmp_path / answer.json()["saved"]).stat().st_size
            assert stored <= 2 * len(data), (name, stored, len(data))
    assert count_images(tmp_path / "photo") == len(uploads)


def test_an_upload_that_would_be_stored_many_times_larger_is_refused(tmp_path):
    from PIL import Image

    rows = np.random.default_rng(5).integers(0, 256, (6, 2000, 3), dtype=np.uint8)
    buffer = io.BytesIO()  # six rows of noise, repeated: lossless WebP keeps them in 40 KB, PNG takes 12 MB
    Image.fromarray(np.tile(rows, (333, 1, 1))).save(buffer, "WEBP", lossless=True)
    with TestClient(create_app(ServeConfig(collect=str(tmp_path)))) as c:
        refused = post(c, "rows", buffer.getvalue(), kind="image/webp")
    assert refused.status_code == 413 and "times the" in refused.json()["detail"]
    assert count_images(tmp_path / "rows") == 0


def test_the_collected_bytes_have_a_budget(tmp_path, monkeypatch):
    from runtime.serve import service

    with TestClient(create_app(ServeConfig(collect=str(tmp_path), collect_max_bytes=10_000))) as c:
        assert post(c, "shirt", png(60, 60)).status_code == 201  # about 10.9 KB of noise: over the budget now
        monkeypatch.setattr(service, "STORED_TTL", 0.0)  # counted again at once (as another worker's writes are)
        refused = post(c, "other", png())
        assert refused.status_code == 409 and "--collect-max-bytes" in refused.json()["detail"]
        monkeypatch.setattr(service, "MIN_FREE_BYTES", 1 << 62)  # a disk with less free than the reserve
        next((tmp_path / "shirt").iterdir()).unlink()
        full = post(c, "shirt", png())
        assert full.status_code == 507 and "almost full" in full.json()["detail"]
    assert count_images(tmp_path / "shirt") == 0 and not (tmp_path / "other").exists()


@pytest.mark.parametrize("label", ["..", ".", "a/b", "", ".hidden", "a\\b", "x" * 65, "new\nline", None,
                                   *REFUSED_LABELS, *JUNK_LABELS])
def test_a_bad_label_is_422(client, collect_dir, label):
    before = sorted(p.name for p in collect_dir.rglob("*"))
    answer = post(client, label, png())
    assert answer.status_code == 422 and "label" in answer.json()["detail"]
    assert sorted(p.name for p in collect_dir.rglob("*")) == before


def test_nfd_and_nfc_labels_go_into_one_folder(tmp_path):
    with TestClient(create_app(ServeConfig(collect=str(tmp_path)))) as c:
        first, second = post(c, "cafe\u0301", png()), post(c, "café", png(seed=1))
    assert first.status_code == second.status_code == 201
    assert first.json()["label"] == "café" and second.json()["count"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["café"]


def test_uploads_are_checked_like_classify(client):
    assert post(client, "shirt", b"not an image").status_code == 415
    assert post(client, "shirt", png(), kind="text/plain").status_code == 415
    assert post(client, "shirt", png()[:60]).status_code == 400


def test_the_caps_per_label_and_of_labels(client, collect_dir):
    for i in range(3):
        assert post(client, "capped", png(seed=i)).status_code == 201
    refused = post(client, "capped", png())
    assert refused.status_code == 409 and "--collect-max" in refused.json()["detail"]
    assert count_images(collect_dir / "capped") == 3
    labels = {p.name for p in collect_dir.iterdir() if p.is_dir()}
    for i in range(4 - len(labels)):
        assert post(client, f"label {i}", png()).status_code == 201
    refused = post(client, "one too many", png())
    assert refused.status_code == 409 and "--collect-max-labels" in refused.json()["detail"]
    assert post(client, "capped", png()).status_code == 409  # an existing label is still refused by its own cap


def test_a_disk_error_is_507(tmp_path):
    (tmp_path / "shirt").write_text("a file where the label's folder should be")
    with TestClient(create_app(ServeConfig(collect=str(tmp_path)))) as c:
        answer = post(c, "shirt", png())
    assert answer.status_code == 507 and "cannot save" in answer.json()["detail"]
    assert str(tmp_path) not in answer.json()["detail"]  # the server's paths are not told


def test_collect_needs_the_token(tmp_path):
    with TestClient(create_app(ServeConfig(collect=str(tmp_path), token="s3cret"))) as c:
        assert post(c, "shirt", png()).status_code == 401
        assert post(c, "shirt", png(), {"Authorization": "Bearer wrong"}).status_code == 401
        assert post(c, "shirt", png(), {"Authorization": "Bearer s3cret"}).status_code == 201
    assert count_images(tmp_path / "shirt") == 1


def test_serve_cli_collect_flags(tmp_path, capsys):
    from runtime.serve.__main__ import parse_args

    args = parse_args(["--collect", str(tmp_path / "new"), "--collect-max", "5"])
    assert args.collect == str(tmp_path / "new") and args.collect_max == 5 and (tmp_path / "new").is_dir()
    assert parse_args([]).collect is None
    blocked = tmp_path / "a-file"
    blocked.write_text("in the way")
    with pytest.raises(SystemExit) as stop:
        parse_args(["--collect", str(blocked)])
    assert stop.value.code == 2 and "cannot write" in capsys.readouterr().err
