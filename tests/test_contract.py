"""The model contract: models of other shapes, made by another tool, run through every entry point;
a model whose metadata cannot work is refused when it is loaded."""

import json
import subprocess
import sys

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
onnx = pytest.importorskip("onnx", reason="builds test models: pip install '.[test]'")

from contract_models import make_model, metadata, reference  # noqa: E402
from runtime import Contract, ModelError, Predictor  # noqa: E402
from runtime.contract import ContractError  # noqa: E402
from runtime.preprocess import prepare  # noqa: E402

SHAPES = {  # name -> (labels, height, width, channels, layout, logits)
    "rgb32": (("a", "b", "c", "d", "e"), 32, 32, 3, "NHWC", False),
    "gray20": (("no", "yes"), 20, 20, 1, "NHWC", False),
    "rgb24x40_nchw_logits": (("x", "y", "z"), 24, 40, 3, "NCHW", True),
}
TOLERANCE = 1e-5  # float32 through onnxruntime against the same arithmetic in numpy


@pytest.fixture(scope="module", params=list(SHAPES))
def model(request, tmp_path_factory):
    labels, h, w, c, layout, logits = SHAPES[request.param]
    path = make_model(tmp_path_factory.mktemp("models") / f"{request.param}.onnx", labels, h, w, c,
                      layout=layout, logits=logits, seed=len(request.param))
    return path, labels, (h, w, c)


def expected(path, image_bgr: np.ndarray, shape) -> np.ndarray:
    """What a resize-kind model must answer, computed independently with OpenCV and numpy."""
    h, w, c = shape
    image = image_bgr if image_bgr.ndim == 3 else cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    if c == 1:
        x = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (w, h), interpolation=cv2.INTER_AREA)[..., None]
    else:
        x = cv2.cvtColor(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    return reference(path, x[None].astype(np.float32) / 255)[0]


def inputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = np.full((480, 640, 3), 190, np.uint8)
    frame[100:380, 200:460] = rng.integers(0, 120, 3, dtype=np.uint8)
    return {"frame 640x480 BGR": frame + rng.integers(0, 20, frame.shape, dtype=np.uint8),
            "28x28 gray": rng.integers(0, 256, (28, 28), dtype=np.uint8),
            "28x28 colour": rng.integers(0, 256, (28, 28, 3), dtype=np.uint8),
            "odd 37x91 colour": rng.integers(0, 256, (37, 91, 3), dtype=np.uint8)}


def test_predict_and_predict_batch_follow_the_metadata(model):
    path, labels, shape = model
    predictor = Predictor(path, num_threads=1)
    assert predictor.labels == labels and predictor.contract.image_shape == shape
    images = inputs()
    batch = predictor.predict_batch(list(images.values()))
    for (name, image), from_batch in zip(images.items(), batch):
        want = expected(path, image, shape)
        got = predictor.predict(image)
        assert got.label == labels[int(np.argmax(want))], name
        np.testing.assert_allclose(got.probabilities, want, atol=TOLERANCE, err_msg=name)
        np.testing.assert_allclose(from_batch.probabilities, want, atol=TOLERANCE, err_msg=name)
        assert len(got.top_k(10)) == len(labels) and got.box == (0, 0, image.shape[1], image.shape[0])


def test_model_shaped_pixels_take_the_fast_path_with_the_same_answer(model):
    path, labels, (h, w, c) = model
    predictor = Predictor(path, num_threads=1)
    pixels = np.random.default_rng(1).integers(0, 256, (h, w, c) if c == 3 else (h, w), dtype=np.uint8)
    fast = predictor.predict(pixels)
    slow = predictor.predict(pixels.astype(np.float32) / 255)  # float: the general path
    np.testing.assert_allclose(fast.probabilities, slow.probabilities, atol=TOLERANCE)
    np.testing.assert_allclose(fast.probabilities, expected(path, pixels, (h, w, c)), atol=TOLERANCE)
    stacked = predictor.predict_batch(np.stack([pixels, pixels]))
    np.testing.assert_allclose(stacked[1].probabilities, fast.probabilities, atol=TOLERANCE)
    roi = predictor.predict(np.pad(pixels, [(3, 5), (7, 2)] + [(0, 0)] * (pixels.ndim - 2)), roi=(7, 3, w, h))
    np.testing.assert_allclose(roi.probabilities, fast.probabilities, atol=TOLERANCE)
    assert roi.box == (7, 3, w, h)


def test_the_command_line_classifies_image_files(model, tmp_path):
    path, labels, shape = model
    files = []
    for i, image in enumerate(inputs(2).values()):
        files.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(files[-1]), image)
    run = subprocess.run([sys.executable, "-m", "runtime", *map(str, files), "--model", str(path), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    for file, answer in zip(files, answers):
        want = expected(path, cv2.imread(str(file), cv2.IMREAD_UNCHANGED), shape)
        assert answer["label"] == labels[int(np.argmax(want))]
        assert len(answer["top_k"]) == min(3, len(labels))  # the default top-k, capped by the labels


def test_the_camera_demo_runs_headless_over_a_folder(model, tmp_path):
    path, labels, shape = model
    images = list(inputs(3).values())[:1] * 3  # a folder of camera-size frames
    for i, image in enumerate(images):
        cv2.imwrite(str(tmp_path / f"{i}.png"), image)
    run = subprocess.run([sys.executable, "-m", "camera_demo", "--source", str(tmp_path), "--model", str(path),
                          "--headless", "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    frames, summary = lines[:-1], lines[-1]
    assert summary["summary"] and summary["frames"] == 3 == len(frames)
    want = labels[int(np.argmax(expected(path, images[0], shape)))]
    assert {frame["label"] for frame in frames} == {want}


def test_a_version_1_model_reads_as_the_first_exports_did(tmp_path):
    meta = {"format_version": 1, "format": "onnx-float", "model_version": "old", "labels": ["p", "q", "r"],
            "input": {"shape": [-1, 28, 28, 1], "layout": "NHWC", "dtype": "float32", "range": [0.0, 1.0]},
            "output": {"shape": [-1, 3], "kind": "probabilities (softmax)"},
            "preprocessing": {"description": "grayscale 28x28", "scale": 1 / 255}}
    predictor = Predictor(make_model(tmp_path / "v1.onnx", ("p", "q", "r"), 28, 28, 1, meta=meta))
    assert predictor.contract == Contract(("p", "q", "r"), 28, 28, 1, preprocessing="object")


def test_input_range_is_applied(tmp_path):
    """A model that takes [-1, 1]: the runtime maps pixel 0 to -1 and 255 to 1."""
    meta = metadata(("a", "b"), 8, 8, 1)
    meta["input"]["range"] = [-1.0, 1.0]
    path = make_model(tmp_path / "signed.onnx", ("a", "b"), 8, 8, 1, meta=meta)
    pixels = np.random.default_rng(4).integers(0, 256, (8, 8), dtype=np.uint8)
    want = reference(path, (pixels.astype(np.float32) / 127.5 - 1)[None, ..., None])[0]
    predictor = Predictor(path)
    np.testing.assert_allclose(predictor.predict(pixels).probabilities, want, atol=TOLERANCE)
    np.testing.assert_allclose(predictor.predict(pixels.astype(np.float64) / 255).probabilities, want,
                               atol=TOLERANCE)


def test_object_kind_frames_a_colour_object(tmp_path):
    """object + RGB: the object's box (widened to the input's aspect ratio) in RGB, not the whole frame."""
    path = make_model(tmp_path / "obj.onnx", ("a", "b", "c"), 16, 16, 3, kind="object")
    frame = np.full((480, 640, 3), 200, np.uint8)
    frame[100:300, 300:400] = (30, 60, 200)  # a red (BGR) object, twice as tall as wide
    prediction = Predictor(path).predict(frame)
    x, y, w, h = prediction.box
    assert prediction.object_found and np.allclose((x, y, x + w, y + h), (300, 100, 400, 300), atol=7)
    left = x + w // 2 - h // 2  # the box grown to a square around its centre
    crop = cv2.cvtColor(cv2.resize(frame[y:y + h, left:left + h], (16, 16), interpolation=cv2.INTER_AREA),
                        cv2.COLOR_BGR2RGB)
    want = reference(path, crop[None].astype(np.float32) / 255)[0]
    np.testing.assert_allclose(prediction.probabilities, want, atol=2e-3)  # a pixel's rounding apart
    prepared = prepare(frame, Predictor(path).contract).image
    assert prepared.shape == (16, 16, 3) and np.abs(prepared * 255 - crop).max() <= 40  # edges may shift a pixel
    assert np.abs(prepared * 255 - crop).mean() < 3
    blank = Predictor(path).predict(np.full((480, 640, 3), 200, np.uint8))
    assert not blank.object_found


MISMATCHES = {  # what is wrong -> (make_model arguments, metadata edit, words the error must contain)
    "labels count differs from the graph's output": ({"classes": 4}, None, "3 labels but the graph outputs 4"),
    "input shape differs from the graph's input": ({}, lambda m: m["input"].update(shape=[-1, 30, 32, 3]),
                                                    "differs from the graph's input"),
    "two channels": ({}, lambda m: m["input"].update(shape=[-1, 32, 32, 2]), "channels must be 1 (gray) or 3"),
    "unknown preprocessing kind": ({}, lambda m: m["preprocessing"].update(kind="letterbox"),
                                   "unknown preprocessing.kind 'letterbox'"),
    "unknown format_version": ({}, lambda m: m.update(format_version=99), "unknown format_version 99"),
    "labels given as a string": ({}, lambda m: m.update(labels="abc"), "labels must be a list"),
    "one label": ({}, lambda m: m.update(labels=["only"]), "two or more"),
    "repeated labels": ({}, lambda m: m.update(labels=["a", "a", "b"]), "distinct"),
    "an empty range": ({}, lambda m: m["input"].update(range=[1, 1]), "input.range"),
    "no input shape": ({}, lambda m: m["input"].pop("shape"), "input.shape"),
    "unknown output kind": ({}, lambda m: m["output"].update(kind="scores"), "unknown output.kind"),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_a_model_that_cannot_work_is_refused_at_load_time(case, tmp_path):
    kwargs, edit, words = MISMATCHES[case]
    meta = metadata(("a", "b", "c"), 32, 32, 3)
    if edit:
        edit(meta)
    path = make_model(tmp_path / "bad.onnx", ("a", "b", "c"), 32, 32, 3, meta=meta, **kwargs)
    with pytest.raises(ModelError, match="bad.onnx") as error:
        Predictor(path)
    assert words in str(error.value)
    run = subprocess.run([sys.executable, "-m", "runtime", str(path), "--model", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and words in run.stderr and "Traceback" not in run.stderr
    camera = subprocess.run([sys.executable, "-m", "camera_demo", "--source", str(tmp_path), "--model", str(path),
                             "--headless"], capture_output=True, text=True, timeout=60)
    assert camera.returncode == 2 and words in camera.stderr and "Traceback" not in camera.stderr


def test_a_graph_that_takes_no_float_image_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
                               helper.make_node("Flatten", ["f"], ["p"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, [None, 2, 1, 1])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"fashion_edge": json.dumps(metadata(("a", "b"), 2, 1, 1))})
    onnx.save(model, tmp_path / "uint8.onnx")
    with pytest.raises(ModelError, match="float32 image tensor"):
        Predictor(tmp_path / "uint8.onnx")


def test_contract_round_trips_and_validates():
    contract = Contract(("a", "b"), 12, 16, 3, (-1.0, 1.0), "resize", "NCHW", "logits")
    meta = contract.to_metadata()
    assert meta["input"]["shape"] == [-1, 3, 12, 16] and meta["format_version"] == 2
    assert Contract.from_metadata(json.loads(json.dumps(meta))) == contract
    with pytest.raises(ContractError):
        Contract(("a", "b"), 0, 16, 1)
    with pytest.raises(ContractError):
        Contract(("a", 3), 4, 4, 1)
