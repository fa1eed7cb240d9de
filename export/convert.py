"""Converters: QAT Keras model -> int8 TFLite, float ONNX and int8 ONNX (QDQ)."""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from runtime.backends import open_backend
from runtime.files import atomic_path
from runtime.metadata import METADATA_KEY, METADATA_MEMBER
from train.keras_env import keras, tf
from train.model import build

DEFAULT_OPSET = 17
INPUT_NAME = "image"


def float_from_qat(qat_model: keras.Model, arch: str) -> keras.Model:
    """The QAT model without its fake-quantization: same fine-tuned weights, plain layers.

    The float ONNX and the source of the int8 ONNX come from here, so every format
    derives from the one QAT model and agrees with it as closely as int8 allows.
    """
    model = build(arch, qat_model.input_shape[1:], qat_model.output_shape[-1])
    wrappers = [layer for layer in qat_model.layers if hasattr(layer, "layer")]  # not the input QuantizeLayer
    if [type(w.layer) for w in wrappers] != [type(layer) for layer in model.layers]:
        raise ValueError(f"the QAT model's layers do not match architecture {arch!r}")
    for fresh, wrapper in zip(model.layers, wrappers):
        # the wrapper holds the layer's variables (plus quantizer state) as "quant_x/kernel:0"
        trained = {w.name.split("/")[-1]: w for w in wrapper.weights}
        fresh.set_weights([trained[w.name.split("/")[-1]].numpy() for w in fresh.weights])
    return model


def verify_model(path: Path, samples: np.ndarray) -> None:
    """Load ``path`` with the runtime (which checks the metadata against the graph) and check
    that it returns probabilities: else raise."""
    backend = open_backend(path, num_threads=1)
    probabilities = backend.run(samples)
    if probabilities.shape != (len(samples), len(backend.info.labels)) or not np.isfinite(probabilities).all():
        raise RuntimeError(f"{path}: bad output {probabilities.shape}")
    if not np.allclose(probabilities.sum(1), 1.0, atol=0.05):
        raise RuntimeError(f"{path}: outputs are not probabilities")


def export_tflite(qat_model: keras.Model, calibration: np.ndarray, path: Path, metadata: dict) -> Path:
    """Full-integer int8 TFLite: int8 input and output, int8 builtin ops only."""
    def representative_dataset():
        for image in calibration:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(qat_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # no float fallback
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    flatbuffer = converter.convert()
    from ai_edge_litert.interpreter import Interpreter

    scale, zero_point = Interpreter(model_content=flatbuffer).get_input_details()[0]["quantization"]
    metadata = {**metadata, "input": {**metadata["input"], "dtype": "int8",
                                      "quantization": {"scale": scale, "zero_point": zero_point}},
                "integrity": {"sha256": hashlib.sha256(flatbuffer).hexdigest()}}  # see runtime.integrity
    with atomic_path(path, lambda p: verify_model(p, calibration[:8])) as tmp:
        tmp.write_bytes(flatbuffer)
        with zipfile.ZipFile(tmp, "a") as archive:  # appended after the flatbuffer
            archive.writestr(METADATA_MEMBER, json.dumps(metadata, indent=1))
    return path


def to_onnx(model: keras.Model, opset: int):
    import tf2onnx

    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME),)
    onnx_model, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    return onnx_model


def embed_onnx_metadata(onnx_model, metadata: dict) -> None:
    import onnx

    del onnx_model.metadata_props[:]
    # the graph's serialized bytes are what runtime.integrity hashes in the saved file
    integrity = {"sha256": hashlib.sha256(onnx_model.graph.SerializeToString()).hexdigest()}
    onnx.helper.set_model_props(onnx_model, {METADATA_KEY: json.dumps({**metadata, "integrity": integrity})})
    onnx_model.doc_string = f"image classifier {metadata['model_version']} ({metadata['format']})"


def save_onnx(onnx_model, path: Path, calibration: np.ndarray) -> Path:
    import onnx

    onnx.checker.check_model(onnx_model, full_check=True)
    with atomic_path(path, lambda p: verify_model(p, calibration[:8])) as tmp:
        onnx.save(onnx_model, tmp)
    return path


def export_onnx_float(float_model: keras.Model, path: Path, metadata: dict, calibration: np.ndarray,
                      opset: int = DEFAULT_OPSET) -> Path:
    onnx_model = to_onnx(float_model, opset)
    embed_onnx_metadata(onnx_model, metadata)
    return save_onnx(onnx_model, path, calibration)


WEIGHTED = {"Conv": 0, "MatMul": 1, "Gemm": 1}  # op -> the axis of its weight's output channels


def first_layer_overrides(model) -> dict:
    """onnxruntime's TensorQuantOverrides for the first layer's weights (the first weighted node: the graph is
    in topological order): uint8, per channel, on the grid the QAT model trained them on (symmetric, 127
    steps a side, so zero point 128; folding BatchNorm in scales a channel's grid, it does not move its
    points). An all-zero channel gets any scale."""
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType

    weights = {i.name: i for i in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type in WEIGHTED and n.input[1] in weights)
    w = numpy_helper.to_array(weights[node.input[1]])
    transposed = any(a.name == "transB" and a.i for a in node.attribute)  # a Gemm's (out, in) weights
    axis = 0 if transposed else WEIGHTED[node.op_type]
    absmax = np.abs(w).max(axis=tuple(a for a in range(w.ndim) if a != axis))
    return {node.input[1]: [{"axis": axis, "quant_type": QuantType.QUInt8, "zero_point": np.array(128, np.uint8),
                             "scale": np.array((m if m > 0 else 1.0) / 127, np.float32)} for m in absmax]}


def export_onnx_int8(float_onnx: Path, path: Path, metadata: dict, calibration: np.ndarray) -> Path:
    """onnxruntime static quantization (QDQ, uint8 activations, MinMax calibration, per-channel weights):
    int8 weights within 7 bits (reduce_range), but the first layer's are uint8 on the QAT model's grid.

    On x86 CPUs with AVX2 but without VNNI onnxruntime multiplies uint8 activations by int8 weights with
    an instruction that adds pairs of products in 16 bits, saturating; 7-bit weights cannot saturate
    (2 x 255 x 64 < 32,768), uint8 weights are multiplied another way but take 2x the time on VNNI
    CPUs. 7 bits cost agreement mostly in the first layer (raw pixels, few weights per output), a few
    percent of the multiply-adds: uint8 there, on the grid QAT trained (so no rounding of its own).
    Images whose top-1 differs from the QAT model's (a 1,500-image colour photo folder / Fashion-MNIST's
    10,000 test images, 2026-12-07), the same with AVX2 emulated (qemu -cpu Haswell) unless said:
    these weights 4 / 25, 129 µs (`python -m runtime.bench`, VNNI, Fashion-MNIST); all int8 1 / 21 but
    303 / 479 with AVX2; all 7-bit 14 / 46; all uint8 5 / 29 at 248 µs; the int8 TFLite 0 / 5.
    tf2onnx's QDQ graph of the QAT model ran 4x slower; of the int8 TFLite 2-4x (0 / 5, 25 with AVX2):
    onnxruntime fuses few of its layers into integer kernels.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quant_pre_process, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration[i:i + 32] for i in range(0, len(calibration), 32))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    with tempfile.TemporaryDirectory() as work:
        pre, raw = Path(work) / "pre.onnx", Path(work) / "quantized.onnx"
        quant_pre_process(str(float_onnx), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(raw), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"TensorQuantOverrides": first_layer_overrides(onnx.load(pre))})
        quantized = onnx.load(raw)
    embed_onnx_metadata(quantized, metadata)
    return save_onnx(quantized, path, calibration)
