"""The pretrained models shipped in runtime/models, evaluated with the runtime alone.

Golden file: qat_test_predictions.npy holds the QAT Keras model's top-1 on the official
test set, written by `python -m export` and copied by `make models`.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from runtime import Predictor
from runtime.predictor import BUNDLED, BUNDLED_MODELS, bundled

ROOT = Path(__file__).resolve().parents[1]
MIN_ACCURACY = 0.935  # the foundation bar, for every shipped int8 model
MAX_GAP_TO_QAT = 0.003  # int8 within 0.3 pp of the QAT Keras model
MIN_AGREEMENT = 0.995  # top-1 agreement with the QAT Keras model
MAX_SIZE_RATIO = 1 / 3.5  # int8 TFLite vs the float model


@pytest.fixture(scope="module")
def qat_predictions():
    return np.load(BUNDLED["int8.tflite"].parent / "qat_test_predictions.npy")


@pytest.mark.parametrize("name", ["int8.tflite", "int8.onnx"])
def test_bundled_int8_models_meet_the_bar(name, fashion, qat_predictions):
    predictions = np.array([p.index for p in Predictor(BUNDLED[name]).predict_batch(fashion.test_images)])
    accuracy = (predictions == fashion.test_labels).mean()
    qat_accuracy = (qat_predictions == fashion.test_labels).mean()
    assert accuracy >= MIN_ACCURACY
    assert abs(accuracy - qat_accuracy) <= MAX_GAP_TO_QAT
    assert (predictions == qat_predictions).mean() >= MIN_AGREEMENT


def test_bundled_float_onnx_agrees(fashion, qat_predictions):
    predictions = np.array([p.index for p in Predictor(BUNDLED["float.onnx"]).predict_batch(fashion.test_images)])
    assert (predictions == fashion.test_labels).mean() >= MIN_ACCURACY - 0.005
    assert (predictions == qat_predictions).mean() >= 0.99


def test_bundled_int8_onnx_weights_are_unsigned():
    from contract_models import eight_bit_types

    assert eight_bit_types(BUNDLED["int8.onnx"]) == {"UINT8"}  # the same on every x86 CPU (export_onnx_int8)


def test_int8_tflite_is_at_most_a_third_and_a_half_of_the_float_size():
    assert BUNDLED["int8.tflite"].stat().st_size <= MAX_SIZE_RATIO * BUNDLED["float.onnx"].stat().st_size


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_bundled_metadata_matches_the_shipped_reports(name):
    folder = bundled(name).parent
    report = json.loads((folder / "train_report.json").read_text())
    parity = json.loads((folder / "parity.json").read_text())
    assert parity["passed"]
    for kind in ("int8.tflite", "int8.onnx", "float.onnx"):
        info = Predictor(bundled(name, kind)).info
        assert info.test_accuracy == pytest.approx(report["qat"]["test_accuracy"])
        assert info.raw["training"]["data_sha256"] == report["data"]["sha256"]
        assert info.raw["training"]["architecture"] == report["architecture"]


def test_bundled_models_are_picked_by_name(tmp_path, monkeypatch):
    """``Predictor("edge")`` is the default; a name is no file name (a model file needs its suffix), and an
    unknown one says which names there are."""
    default = Predictor()
    assert default.model_path == Predictor("edge").model_path == bundled("edge") == BUNDLED["int8.tflite"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "edge").write_bytes(b"not a model")  # a file of the same name does not shadow it
    assert Predictor("edge").model_path == bundled("edge")
    with pytest.raises(Exception, match="no bundled model 'large'; bundled: edge"):
        Predictor("large")
    with pytest.raises(Exception, match="unsupported model format"):
        Predictor("nested/edge")  # a path, not a name


def test_bundled_tflite_carries_the_standard_metadata():
    """MediaPipe, tflite-support and Android Studio read labels from TFLITE_METADATA and labels.txt
    (added to the bundled file by `python -m export.restamp`, its graph unchanged)."""
    import zipfile

    from runtime.integrity import tflite_flatbuffer

    path = BUNDLED["int8.tflite"]
    flatbuffer = tflite_flatbuffer(path, path.read_bytes())
    assert b"TFLITE_METADATA" in flatbuffer and b"M001" in flatbuffer  # its name and the schema's identifier
    with zipfile.ZipFile(path) as archive:
        assert tuple(archive.read("labels.txt").decode().splitlines()) == Predictor(path).labels


def test_a_model_s_card_has_its_recall_by_class_and_camera_sets(tmp_path):
    """``python -m export.results DIR``, the card: every figure from the reports beside the model."""
    import shutil

    from export.results import summary

    for name in ("train_report.json", "parity.json"):
        shutil.copy(bundled().parent / name, tmp_path / name)
    (tmp_path / "camera_eval_test.json").write_text(json.dumps(
        {"frames": 500, "original_28x28_accuracy": 0.95, "standard": {"accuracy": 0.938}, "desk": {"accuracy": 0.908}}))
    card = summary(tmp_path)
    recall = json.loads((tmp_path / "train_report.json").read_text())["qat"]["per_class"]["Shirt"]["recall"]
    assert f"Shirt {recall:.1%}" in card and "parity gate: passed" in card
    assert "(`python -m train.camera_eval`, 500 a set): standard 93.80%, desk 90.80%" in card


def test_every_bundled_model_has_its_recipe_and_its_files():
    """``make models`` (tools/bundle_models.py) makes every bundled model, the default first."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bundle_models", ROOT / "tools" / "bundle_models.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert list(tool.RECIPES)[0] == BUNDLED_MODELS[0] and set(BUNDLED_MODELS) <= set(tool.RECIPES)
    for name in BUNDLED_MODELS:
        folder = bundled(name).parent
        assert all((folder / file).is_file() for file in tool.FILES), name
        # its card (export.results) was made from the reports beside it
        card = (folder / "card.md").read_text()
        parity = json.loads((folder / "parity.json").read_text())["formats"]["tflite-int8"]
        assert f"| tflite-int8 | {parity['accuracy']:.2%} | {parity['top1_agreement']:.2%} |" in card, name
        assert "recall by class" in card and "camera frames of test images" in card, name
