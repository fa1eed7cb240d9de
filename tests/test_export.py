"""Exporters and the parity gate on a small real QAT model."""

import json

import numpy as np
import pytest

from export.formats import FORMATS

ARTIFACTS = {name: fmt.file("fashion") for name, fmt in FORMATS.items()}  # a Fashion-MNIST run
PREDICTOR_FILES = [name for name in ARTIFACTS if name != "tflm"]  # C++ source is for a firmware build

pytestmark = pytest.mark.slow


def test_every_format_is_written_and_passes_parity(exported):
    out, code = exported
    assert code == 0
    for file in ARTIFACTS.values():
        assert (out / file).stat().st_size > 10_000
    assert not list(out.glob(".*partial*"))
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and parity["test_images"] == parity["agreement_images"] == 10000
    assert parity["formats"]["tflm"]["agreement_images"] == FORMATS["tflm"].gate_images  # TFLM's slow kernels
    assert set(parity["formats"]) == {"keras-qat", *ARTIFACTS}
    for name, r in parity["formats"].items():
        assert {"accuracy", "top1_agreement", "mean_abs_prob_diff", "max_abs_prob_diff", "size_kb"} <= set(r)
        assert r["top1_agreement"] >= (0.99 if FORMATS.get(name, FORMATS["tflite-int8"]).int8 else 0.95), name
        drop = r["accuracy_drop"]
        images = r["agreement_images"]
        assert drop["images"] == images and drop["lower_bound"] <= parity["thresholds"]["max_int8_accuracy_drop"]
        assert r["disagreements"] == round((1 - r["top1_agreement"]) * images) and len(r["per_class_agreement"]) == 10
    per_class = parity["int8_vs_float_per_class"]
    assert set(per_class) == {"tflite-int8", "onnx-int8", "mediapipe", "openvino-int8", "tflm"}
    assert len(per_class["onnx-int8"]) == 10


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


def test_standard_metadata_is_in_the_flatbuffer_and_renewing_it_changes_no_answer(exported, tmp_path):
    import shutil
    import zipfile

    from tensorflow.lite.tools import flatbuffer_utils

    from export.restamp import main as restamp
    from runtime import Predictor
    from runtime.integrity import tflite_flatbuffer
    from train.data import CLASS_NAMES, load

    out, _ = exported
    path = tmp_path / "model.tflite"
    shutil.copy(out / ARTIFACTS["tflite-int8"], path)

    def standard(path):
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_flatbuffer(path, path.read_bytes())))
        entries = [m for m in model.metadata if m.name in (b"TFLITE_METADATA", "TFLITE_METADATA")]
        assert len(entries) == 1
        return bytes(model.buffers[entries[0].buffer].data)

    assert standard(path)[4:8] == b"M001"  # metadata_schema.fbs's file identifier
    with zipfile.ZipFile(path) as archive:
        assert archive.read("labels.txt").decode().splitlines() == list(CLASS_NAMES)
        # undated members: the same model gives the same bytes whenever it is exported or renewed
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    images = load(allow_download=False).test_images[:300]
    before = [p.probabilities for p in Predictor(path).predict_batch(images)]
    path.chmod(0o444)
    assert restamp([str(path)]) == 0  # renewed: one TFLITE_METADATA still, the graph's answers the same
    assert standard(path) == standard(out / ARTIFACTS["tflite-int8"])
    np.testing.assert_array_equal(before, [p.probabilities for p in Predictor(path).predict_batch(images)])
    renewed = path.read_bytes()
    assert restamp([str(path)]) == 0 and path.read_bytes() == renewed  # idempotent: the same bytes again
    assert path.stat().st_mode & 0o777 == 0o444  # a read-only model stays read-only


def test_a_tflite_whose_labels_file_or_checksum_was_changed_is_refused(exported, tmp_path):
    import zipfile

    from export.restamp import main as restamp
    from runtime import Predictor
    from runtime.integrity import tflite_flatbuffer
    from runtime.metadata import ModelError

    out, _ = exported
    source = out / ARTIFACTS["tflite-int8"]
    flatbuffer = tflite_flatbuffer(source, source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        labels, ours = archive.read("labels.txt").decode(), json.loads(archive.read("fashion_edge.json"))

    def rebuilt(name, labels_text, meta):
        path = tmp_path / name
        path.write_bytes(flatbuffer)
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("labels.txt", labels_text)
            archive.writestr("fashion_edge.json", json.dumps(meta))
        return path

    assert Predictor(rebuilt("same.tflite", labels, ours)).labels == tuple(labels.splitlines())
    with pytest.raises(ModelError, match="labels.txt names other labels"):  # MediaPipe would show these
        Predictor(rebuilt("labels.tflite", labels.replace("Bag", "Purse"), ours))
    unverified = rebuilt("unverified.tflite", labels, {k: v for k, v in ours.items() if k != "integrity"})
    assert restamp([str(unverified)]) == 2  # a new checksum would vouch for bytes nobody verified


def test_mediapipe_file_takes_uint8_rgb_and_answers_as_the_int8_tflite(exported):
    """MediaPipe Tasks' ImageClassifier needs uint8 (or float32) RGB input: the same int8 layers behind a
    uint8 input and, for a gray model, a luma convolution whose int8 weights sum to exactly 1."""
    from ai_edge_litert.interpreter import Interpreter

    from runtime import Predictor
    from train.data import load

    out, _ = exported
    interpreter = Interpreter(model_path=str(out / ARTIFACTS["mediapipe"]))
    image, scores = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert image["dtype"] == np.uint8 and list(image["shape"][1:]) == [28, 28, 3]
    assert image["quantization"] == (pytest.approx(1 / 255), 0)  # pixel p is the value p / 255: no rounding
    assert scores["dtype"] == np.float32
    gray = load(allow_download=False).test_images[:1000]
    ours = Predictor(out / ARTIFACTS["tflite-int8"]).predict_batch(gray)
    mediapipe = Predictor(out / ARTIFACTS["mediapipe"]).predict_batch(np.repeat(gray[..., None], 3, axis=3))
    assert [p.index for p in mediapipe] == [p.index for p in ours]
    np.testing.assert_allclose([p.probabilities for p in mediapipe], [p.probabilities for p in ours], atol=1 / 256)


def test_openvino_ir_keeps_int8_and_its_checksum_covers_the_weights(exported, tmp_path):
    import shutil

    from runtime import Predictor
    from runtime.metadata import ModelError

    out, _ = exported
    xml = out / ARTIFACTS["openvino-int8"]
    assert xml.read_text().count('type="FakeQuantize"') >= 6  # the int8 ONNX's quantized layers, kept
    predictor = Predictor(xml)
    assert predictor.info.raw["format"] == "openvino-int8" and predictor.labels == Predictor(
        out / ARTIFACTS["onnx-int8"]).labels
    batch = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    before = batch.copy()
    expected = predictor.backend.run(batch)
    batch[:] = 0  # OpenVINO shares the caller's array unless told not to: the answer must not change
    np.testing.assert_array_equal(expected, predictor.backend.run(before))
    for changed in (".bin", ".xml"):
        for suffix in (".xml", ".bin"):
            shutil.copy(xml.with_suffix(suffix), tmp_path / f"m{suffix}")
        target = tmp_path / f"m{changed}"
        data = bytearray(target.read_bytes())
        if changed == ".bin":
            data[len(data) // 3] ^= 0x01  # a flipped weight bit
        else:
            data = data.replace(b'name="image" type="Parameter"', b'name="picture" type="Parameter"', 1)
        target.write_bytes(bytes(data))
        with pytest.raises(ModelError, match="SHA-256|cannot read"):
            Predictor(tmp_path / "m.xml")
    for suffix in (".xml", ".bin"):
        shutil.copy(xml.with_suffix(suffix), tmp_path / f"m{suffix}")
    text = (tmp_path / "m.xml").read_text()  # a section after the metadata (OpenVINO reads a legacy
    # <pre-process> there): not hashed, so refused, whatever it holds
    (tmp_path / "m.xml").write_text(text.replace("</net>", "<extra/></net>"))
    with pytest.raises(ModelError, match="cannot read the graph"):
        Predictor(tmp_path / "m.xml")
    (tmp_path / "m.bin").unlink()
    with pytest.raises(ModelError, match="OpenVINO cannot read it"):
        Predictor(tmp_path / "m.xml")


def test_a_format_asked_for_alone_is_made_from_this_model_not_an_older_file(exported, tmp_path):
    import shutil

    from export.__main__ import main

    out, _ = exported
    for name in ("qat_model.h5", "train_report.json"):
        shutil.copy(out / name, tmp_path / name)
    (tmp_path / ARTIFACTS["onnx-int8"]).write_bytes(b"an older export")  # to be replaced, not converted
    assert main(["--format", "openvino", "--model", str(tmp_path / "qat_model.h5"), "--calibration-size", "100"]) == 0
    parity = json.loads((tmp_path / "parity.json").read_text())
    assert set(parity["formats"]) == {"keras-qat", "onnx-float", "onnx-int8", "openvino-int8"} and parity["passed"]


def test_tflm_sources_hold_the_int8_model_its_ops_and_the_arena_it_runs_in(exported):
    from export.micro import MicroBackend, interpreter, read_array
    from runtime.integrity import tflite_flatbuffer

    out, _ = exported
    source = out / ARTIFACTS["tflm"]
    int8 = out / ARTIFACTS["tflite-int8"]
    assert read_array(source) == tflite_flatbuffer(int8, int8.read_bytes())  # the bytes a board flashes
    header = source.with_suffix(".h").read_text()
    meta = json.loads(source.with_suffix(".json").read_text())
    arena = meta["tflm"]["arena_bytes"]
    assert f"kTensorArenaSize = {arena};" in header and 10_000 < arena < 200_000
    assert all(f"resolver.Add{op}()" in header for op in meta["tflm"]["ops"])
    assert {"Conv2D", "FullyConnected", "Softmax"} <= set(meta["tflm"]["ops"])
    assert f"kNumOps = {len(meta['tflm']['ops'])};" in header and "kNumLabels = 10;" in header
    backend = MicroBackend(source)
    assert backend.size_bytes == meta["tflm"]["model_bytes"]
    with pytest.raises(RuntimeError):  # measured, not padded: 256 bytes less does not allocate
        interpreter(read_array(source), arena - 256).invoke()


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


@pytest.mark.parametrize("name", PREDICTOR_FILES)
def test_runtime_reads_the_embedded_metadata(exported, name):
    from runtime import Predictor
    from train.data import CLASS_NAMES

    out, _ = exported
    predictor = Predictor(out / ARTIFACTS[name])
    report = json.loads((out / "train_report.json").read_text())
    assert predictor.labels == CLASS_NAMES
    assert predictor.info.raw["format_version"] == 2 and predictor.contract.preprocessing == "object"
    assert report["contract"]["input"]["shape"] == [-1, 28, 28, 1]
    channels = 3 if name == "mediapipe" else 1  # MediaPipe Tasks take RGB only: the gray conversion is in the graph
    assert predictor.info.raw["input"]["shape"] == [-1, 28, 28, channels]
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
    assert "choose from 'tflite', 'onnx', 'mediapipe', 'openvino', 'tflm', 'all'" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "missing.h5")]) == 2
    assert "run `python -m train`" in capsys.readouterr().err
