"""Exporters and the parity gate on a small real QAT model."""

import json

import numpy as np
import pytest

from export.formats import FORMATS

ARTIFACTS = {name: fmt.file for name, fmt in FORMATS.items()}

pytestmark = pytest.mark.slow


def test_every_format_is_written_and_passes_parity(exported):
    out, code = exported
    assert code == 0
    for file in ARTIFACTS.values():
        assert (out / file).stat().st_size > 10_000
    assert not list(out.glob(".*partial*"))
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and parity["test_images"] == parity["agreement_images"] == 10000
    assert set(parity["formats"]) == {"keras-qat", *ARTIFACTS}
    for name, r in parity["formats"].items():
        assert {"accuracy", "top1_agreement", "mean_abs_prob_diff", "max_abs_prob_diff", "size_kb"} <= set(r)
        assert r["top1_agreement"] >= (0.99 if "int8" in name else 0.95), name
        drop = r["accuracy_drop"]
        assert drop["images"] == 10000 and drop["lower_bound"] <= parity["thresholds"]["max_int8_accuracy_drop"]
        assert r["disagreements"] == round((1 - r["top1_agreement"]) * 10000) and len(r["per_class_agreement"]) == 10
    per_class = parity["int8_vs_float_per_class"]
    assert set(per_class) == {"tflite-int8", "onnx-int8"} and len(per_class["onnx-int8"]) == 10


def test_tflite_is_full_integer(exported):
    from ai_edge_litert.interpreter import Interpreter

    out, _ = exported
    interpreter = Interpreter(model_path=str(out / ARTIFACTS["tflite-int8"]))
    interpreter.allocate_tensors()
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    # every op an int8 builtin: no tensor is float anywhere in the graph
    dtypes = {t["dtype"] for t in interpreter.get_tensor_details()}
    assert dtypes <= {np.int8, np.int32}, dtypes
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "DEQUANTIZE" not in ops and "QUANTIZE" not in ops
    assert (out / ARTIFACTS["tflite-int8"]).stat().st_size * 3.5 < (out / ARTIFACTS["onnx-float"]).stat().st_size


def test_onnx_models_check_and_declare_their_contract(exported):
    import onnx

    out, _ = exported
    for name in ("onnx-float", "onnx-int8"):
        model = onnx.load(out / ARTIFACTS[name])
        onnx.checker.check_model(model, full_check=True)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        batch = model.graph.input[0].type.tensor_type.shape.dim[0]
        assert not batch.HasField("dim_value"), "batch dimension must be dynamic"
        meta = json.loads({p.key: p.value for p in model.metadata_props}["fashion_edge"])
        assert meta["input"]["layout"] == "NHWC" and meta["format"] == name
    ops = {node.op_type for node in onnx.load(out / ARTIFACTS["onnx-int8"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_onnx_int8_weights_cannot_saturate_16_bits(exported):
    """On x86 CPUs with AVX2 but without VNNI onnxruntime adds pairs of uint8 x int8 products in 16 bits
    (see export_onnx_int8): int8 weights within 7 bits, the first layer's uint8 on the QAT model's grid."""
    import onnx
    from onnx import numpy_helper

    out, _ = exported
    graph = onnx.load(out / ARTIFACTS["onnx-int8"]).graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    dequantized = {n.output[0]: (constants[n.input[0]], constants[n.input[2]]) for n in graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in constants}
    weights = [dequantized[n.input[1]] for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    (first, zero_point), rest = weights[0], weights[1:]
    assert first.dtype == np.uint8 and (zero_point == 128).all() and first.min() >= 1  # 127 steps a side
    assert len(rest) == 5 and all(w.dtype == np.int8 and (z == 0).all() for w, z in rest)
    assert max(2 * 255 * int(np.abs(w.astype(int)).max()) for w, _ in rest) < 2 ** 15


@pytest.mark.parametrize("name", list(ARTIFACTS))
def test_runtime_reads_the_embedded_metadata(exported, name):
    from runtime import Predictor
    from train.data import CLASS_NAMES

    out, _ = exported
    predictor = Predictor(out / ARTIFACTS[name])
    report = json.loads((out / "train_report.json").read_text())
    assert predictor.labels == CLASS_NAMES
    assert predictor.info.raw["format_version"] == 2 and predictor.contract.preprocessing == "object"
    assert predictor.info.raw["input"]["shape"] == [-1, 28, 28, 1] == report["contract"]["input"]["shape"]
    assert predictor.info.test_accuracy == pytest.approx(report["qat"]["test_accuracy"])
    assert predictor.info.raw["training"]["data_sha256"] == report["data"]["sha256"]
    if name == "tflite-int8":
        quant = predictor.info.raw["input"]["quantization"]
        assert quant["scale"] == pytest.approx(1 / 255, rel=0.05) and -128 <= quant["zero_point"] <= 127


def test_check_alone_reruns_the_gate(exported):
    from export.__main__ import main

    out, _ = exported
    (out / "parity.json").unlink()
    assert main(["--check", "--model", str(out / "qat_model.h5")]) == 0
    assert json.loads((out / "parity.json").read_text())["passed"]


def test_interrupted_export_leaves_existing_model_untouched(exported, monkeypatch):
    from export.__main__ import main

    out, _ = exported
    target = out / ARTIFACTS["onnx-float"]
    before = target.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("onnx.save", interrupted)
    assert main(["--format", "onnx", "--model", str(out / "qat_model.h5")]) == 130
    assert target.read_bytes() == before
    assert not list(out.glob(".*partial*"))


def test_cli_lists_valid_formats_and_names_a_missing_model(tmp_path, capsys):
    from export.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--format", "tfilte"])
    assert exit_info.value.code == 2
    assert "choose from 'tflite', 'onnx', 'all'" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "missing.h5")]) == 2
    assert "run `python -m train`" in capsys.readouterr().err
