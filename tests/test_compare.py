"""The architecture registry and ``python -m experiments.compare --quick`` (real data, real models)."""

import json

import numpy as np
import pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_pareto_front_on_a_hand_made_example():
    from experiments.compare import pareto_front

    points = [(0.93, 95.0),   # accurate and slow: on the front
              (0.92, 95.0),   # as slow, less accurate: dominated
              (0.91, 30.0),   # faster than the first: on the front
              (0.90, 40.0),   # slower and less accurate than the third: dominated
              (0.84, 9.0),    # fastest: on the front
              (0.84, 9.0)]    # a tie dominates neither: both stay
    assert pareto_front(points) == [True, False, True, False, True, True]
    assert pareto_front([(0.5, 1.0)]) == [True]


def test_arch_specs_parse_and_reject():
    from train.model import parse_spec, spec

    assert parse_spec("edge") == ("edge", {})
    assert parse_spec("edge:width=1.5,dropout=0.3") == ("edge", {"width": 1.5, "dropout": 0.3})
    assert parse_spec(spec("edge", width=0.75, dropout=0.1)) == ("edge", {"width": 0.75, "dropout": 0.1})
    for bad in ("nope", "edge:width", "edge:width=x", "edge:filters=3", "linear:dropout=0.1"):
        with pytest.raises(ValueError):
            parse_spec(bad)


@pytest.mark.slow
def test_every_architecture_builds_and_converts_to_int8(tmp_path):
    """Each registry entry: the layers its kind promises, QAT wrapping, full-int8 TFLite."""
    from export.convert import export_tflite, float_from_qat
    from export.metadata import build_metadata
    from runtime import Contract, Predictor
    from train.data import CLASS_NAMES
    from train.keras_env import keras
    from train.model import ARCHITECTURES, build, count_macs
    from train.trainer import quantize

    L = keras.layers
    FASHION = Contract(CLASS_NAMES, 28, 28, 1)
    calibration = np.random.default_rng(0).random((20, 28, 28, 1), dtype=np.float32)
    for name in ARCHITECTURES:
        model = build(name, FASHION.image_shape, len(FASHION.labels))
        kinds = {type(layer) for layer in model.layers}
        assert model.output_shape == (None, 10) and model.layers[-1].activation.__name__ == "softmax"
        if name in ("mlp", "linear"):
            assert L.Conv2D not in kinds and L.Dense in kinds
        else:
            assert L.Conv2D in kinds and L.MaxPooling2D in kinds
        if name == "linear":
            assert [type(layer) for layer in model.layers] == [L.Flatten, L.Dense]
        if name == "lenet":  # L2 on every hidden layer's weights, and dropout
            hidden = [layer for layer in model.layers if isinstance(layer, (L.Conv2D, L.Dense))][:-1]
            assert all(layer.kernel_regularizer is not None for layer in hidden) and L.Dropout in kinds
        if name == "residual":  # basic blocks: the input added back, batch norm throughout
            assert L.Add in kinds and L.BatchNormalization in kinds
        assert count_macs(model) > 0
        qat = quantize(model)
        plain = float_from_qat(qat, name)  # the ONNX exporter's round trip understands it too
        assert np.allclose(plain.predict(calibration[:4], verbose=0), model.predict(calibration[:4], verbose=0),
                           atol=1e-5), name  # the same weights, whatever the model's kind (functional too)
        path = export_tflite(qat, calibration, tmp_path / f"{name}.tflite", FASHION,
                             build_metadata("tflite-int8", "test", {"architecture": name}, FASHION))
        prediction = Predictor(path, num_threads=1).predict(np.zeros((28, 28), np.uint8))
        assert 0 <= prediction.index < 10, name
    shape, classes = FASHION.image_shape, len(FASHION.labels)
    assert build("edge:width=0.5", shape, classes).count_params() < build("edge", shape, classes).count_params() / 3
    residual, lean = build("residual", shape, classes), build("residual:width=0.5", shape, classes)
    assert 12e6 < count_macs(residual) < 15e6 and count_macs(lean) < count_macs(residual) / 3.5


@pytest.fixture(scope="module")
def quick_compare(tmp_path_factory):
    from experiments.compare import main

    out = tmp_path_factory.mktemp("compare")
    assert main(["--quick", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_compare_json_has_sane_rows(quick_compare):
    from experiments.compare import QUICK_ARCHS, SHIPPED

    payload = json.loads((quick_compare / "compare.json").read_text())
    rows = {row["name"]: row for row in payload["rows"]}
    assert list(rows) == [*QUICK_ARCHS, SHIPPED]
    for row in rows.values():
        for key in ("float_test_accuracy", "qat_test_accuracy", "int8_test_accuracy"):
            assert 0.0 <= row[key] <= 1.0
        assert set(row["camera_accuracy"]) == {"standard", "hard", "desk"}
        assert 0 < row["latency_us"] <= row["latency_p95_us"] < 100_000
        assert row["int8_size_kb"] > 5 and row["parameters"] > 1000 and row["train_time_s"] > 0
        assert isinstance(row["pareto"], bool)
    assert rows["linear"]["parameters"] == 7850 and rows["linear"]["int8_size_kb"] < 30
    assert rows["edge"]["int8_size_kb"] > 5 * rows["linear"]["int8_size_kb"]
    assert rows["linear"]["latency_us"] < rows["edge"]["latency_us"]
    assert rows["linear"]["int8_test_accuracy"] > 0.3  # above chance after one epoch on 2,000 images
    shipped = rows[SHIPPED]
    assert shipped["epochs"] == 35 and shipped["int8_test_accuracy"] > 0.93 and shipped["pareto"]
    assert shipped["camera_accuracy"]["standard"] > 0.7
    assert rows["edge"]["epochs"] == 1 and payload["budget"]["limit"] == 2000


@pytest.mark.slow
def test_compare_markdown_and_plot(quick_compare):
    import matplotlib.image

    from experiments.compare import QUICK_ARCHS, SHIPPED

    table = (quick_compare / "compare.md").read_text()
    body = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split("|")[1].strip() for line in body] == [*QUICK_ARCHS, SHIPPED]
    assert all(line.count("|") == 12 for line in body)
    png = quick_compare / "compare.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 300 and image.shape[1] > 500 and image.std() > 0.01


@pytest.mark.slow
def test_search_starts_from_the_default_and_selects_on_validation(tmp_path):
    from train.search import main
    from train.trials import DEFAULTS

    out = tmp_path / "search.json"
    assert main(["--trials", "2", "--epochs", "1", "--limit", "500", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["default"]["trial"] == 0 and payload["default"]["params"] == DEFAULTS
    by_index = {t["trial"]: t for t in payload["trials"]}
    assert sorted(by_index) == [0, 1] and by_index[1]["params"] != DEFAULTS
    assert payload["best"]["val_accuracy"] == max(t["val_accuracy"] for t in payload["trials"])
    assert payload["budget"]["validation_images"] == 5000 and payload["budget"]["train_images"] <= 500
    assert all(0.0 <= t["val_accuracy"] <= 1.0 and t["arch"].startswith("edge:") for t in payload["trials"])
