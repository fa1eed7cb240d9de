"""The runtime under abuse: shared between threads, odd inputs, corrupted model files."""

import shutil
import sys
import threading
import time

import numpy as np
import pytest

from runtime import ModelError, Predictor
from runtime.predictor import BUNDLED

FLIPS = 120  # random single-bit flips per model file
THREADS = 8


@pytest.fixture(scope="module")
def images(fashion):
    return fashion.test_images[:400]


@pytest.mark.parametrize("model", ["int8.tflite", "int8.onnx"])
def test_one_predictor_shared_by_threads_answers_as_alone(model, images, fashion):
    predictor = Predictor(BUNDLED[model], num_threads=1)
    frames = [np.pad(255 - image, 40, constant_values=230) for image in images[:40]]  # the general path too
    alone = [predictor.predict(image).index for image in images]
    alone_frames = [predictor.predict(frame).index for frame in frames]
    errors, wrong = [], []

    def work(offset: int) -> None:
        try:
            for i in range(len(images)):
                k = (i + offset * 50) % len(images)
                if predictor.predict(images[k]).index != alone[k]:
                    wrong.append(k)
                j = k % len(frames)
                if predictor.predict_batch([frames[j], images[k]])[0].index != alone_frames[j]:
                    wrong.append(("frame", j))
        except Exception as e:  # noqa: BLE001 - any error counts
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and wrong == []


def test_big_endian_and_odd_arrays_mean_the_same_pixels(images):
    predictor = Predictor(num_threads=1)
    wide = images[:50].astype(np.uint16) * 257
    for native, swapped in zip(wide, wide.astype(">u2")):
        np.testing.assert_array_equal(predictor.predict(swapped).probabilities,
                                      predictor.predict(native).probabilities)
    floats = images[0].astype(">f4") / 255
    np.testing.assert_allclose(predictor.predict(floats).probabilities,
                               predictor.predict(images[0]).probabilities, atol=0.02)


def test_bad_arguments_say_what_is_wrong(images):
    for threads in (-1, 0, "two", 1.5, True):
        with pytest.raises(ValueError, match="num_threads"):
            Predictor(num_threads=threads)
    predictor = Predictor(num_threads=1)
    from_generator = predictor.predict_batch(image for image in images[:5])
    assert [p.index for p in from_generator] == [p.index for p in predictor.predict_batch(images[:5])]
    for k in (-1, 0, 2.5):
        with pytest.raises(ValueError, match="positive integer"):
            predictor.predict(images[0]).top_k(k)
    assert len(predictor.predict(images[0]).top_k(99)) == len(predictor.labels)
    with pytest.raises(ValueError, match=r"1\.00000"):  # not a rounded "1"
        predictor.predict(np.full((28, 28), 1.0000001, np.float32))


def test_long_thin_images_cost_little_and_cache_nothing_big(monkeypatch):
    import runtime.preprocess as preprocess

    shapes = []
    original = preprocess.border_geometry

    def spy(h, w):
        shapes.append((h, w))
        return original(h, w)

    for name, module in list(sys.modules.items()):  # each of the package's modules that calls it
        if name.startswith("runtime.preprocess") and getattr(module, "border_geometry", None) is original:
            monkeypatch.setattr(module, "border_geometry", spy)
    predictor = Predictor(num_threads=1)
    for shape in [(4, 2_000_000), (2_000_000, 4), (6, 500_000), (3000, 7), (480, 640)]:
        image = np.full(shape, 210, np.uint8)
        image[tuple(slice(n // 3, n // 2) if n > 100 else slice(None) for n in shape)] = 20
        started = time.perf_counter()
        predictor.predict(image)
        assert time.perf_counter() - started < 1.0, shape
    assert shapes and all(h * w <= 100 * 100 for h, w in shapes), shapes  # the small copy only


@pytest.mark.parametrize("model", ["int8.tflite", "int8.onnx"])
def test_a_flipped_bit_is_refused_or_changes_nothing(model, images, tmp_path):
    """Every flip of one bit either fails to load with ModelError or answers exactly as before
    (a flip in the metadata's provenance); never a silently different answer."""
    source = BUNDLED[model]
    reference = Predictor(source, num_threads=1).backend.run_pixels(images[:64, ..., None])
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(7)
    silent = 0
    for n, position in enumerate(rng.integers(0, len(data) * 8, FLIPS)):
        corrupt = bytearray(data)
        corrupt[position // 8] ^= 1 << (position % 8)
        path = tmp_path / f"{n}{source.suffix}"
        path.write_bytes(corrupt)
        try:
            answer = Predictor(path, num_threads=1).backend.run_pixels(images[:64, ..., None])
        except ModelError:
            continue
        silent += not np.array_equal(answer, reference)
        path.unlink()
    assert silent == 0


def test_a_model_without_a_checksum_still_loads_unless_a_deployment_requires_one(tmp_path, monkeypatch):
    """Models written by other tools need not carry one (docs/model-contract.md);
    FASHION_EDGE_REQUIRE_INTEGRITY=1 refuses them."""
    import json

    onnx = pytest.importorskip("onnx", reason="edits the model's metadata: pip install '.[test]'")
    model = onnx.load(BUNDLED["int8.onnx"])
    meta = json.loads(model.metadata_props[0].value)
    del meta["integrity"]
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {"fashion_edge": json.dumps(meta)})
    onnx.save(model, tmp_path / "plain.onnx")
    assert Predictor(tmp_path / "plain.onnx").labels == Predictor(BUNDLED["int8.onnx"]).labels
    shutil.copy(BUNDLED["int8.onnx"], tmp_path / "copy.onnx")
    assert Predictor(tmp_path / "copy.onnx").info.raw["integrity"]["sha256"]
    monkeypatch.setenv("FASHION_EDGE_REQUIRE_INTEGRITY", "1")
    with pytest.raises(ModelError, match="no checksum in its metadata"):
        Predictor(tmp_path / "plain.onnx")
    assert Predictor(tmp_path / "copy.onnx").labels  # one with a checksum still loads


def test_array_subclasses_are_read_as_the_array_they_hold(images):
    predictor = Predictor(num_threads=1)
    want = predictor.predict(images[0]).probabilities
    for odd in (np.asmatrix(images[0]), np.ma.masked_array(images[0]), np.asfortranarray(images[0]),
                images[0][:, ::-1][:, ::-1]):
        np.testing.assert_array_equal(predictor.predict(odd).probabilities, want)
        np.testing.assert_array_equal(predictor.predict_batch([odd])[0].probabilities, want)


def test_tflite_metadata_that_inflates_big_is_refused_without_reading_it_all(tmp_path):
    """A 64 MiB member that deflates to about 64 KB: read no further than MAX_METADATA_BYTES."""
    import tracemalloc
    import zipfile

    from runtime.metadata import MAX_METADATA_BYTES

    bomb = tmp_path / "bomb.tflite"
    flatbuffer = BUNDLED["int8.tflite"].read_bytes()
    with zipfile.ZipFile(BUNDLED["int8.tflite"]) as archive:
        start = min(info.header_offset for info in archive.infolist())
    bomb.write_bytes(flatbuffer[:start])
    with zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("fashion_edge.json", "w", force_zip64=True) as member:
            for _ in range(64):
                member.write(b" " * (1 << 20))
    assert bomb.stat().st_size < 2 * len(flatbuffer)
    tracemalloc.start()
    with pytest.raises(ModelError, match=f"larger than {MAX_METADATA_BYTES} bytes"):
        Predictor(bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * MAX_METADATA_BYTES
