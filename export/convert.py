"""Converters: QAT Keras model -> int8 TFLite, float ONNX and int8 ONNX (QDQ)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from export.tflite_metadata import append_associated_files, with_metadata
from runtime.backends import open_backend
from runtime.contract import Contract
from runtime.files import atomic_path
from runtime.metadata import METADATA_KEY
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
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]  # functional
    if [type(w.layer) for w in wrappers] != [type(layer) for layer in layers]:
        raise ValueError(f"the QAT model's layers do not match architecture {arch!r}")
    for fresh, wrapper in zip(layers, wrappers):
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


def to_tflite(model: keras.Model, calibration: np.ndarray, input_type=None, output_type=None) -> bytes:
    """Full-integer TFLite: int8 builtin ops only, input and output int8 unless given."""
    def representative_dataset():
        for image in calibration:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # no float fallback
    converter.inference_input_type = input_type or tf.int8
    converter.inference_output_type = output_type or tf.int8
    return converter.convert()


def save_tflite(flatbuffer: bytes, path: Path, contract: Contract, metadata: dict, calibration: np.ndarray) -> Path:
    """Write ``flatbuffer`` with the standard metadata, then its checksum in our own (export.tflite_metadata
    says why in this order); verified by loading it with the runtime before it replaces ``path``."""
    from ai_edge_litert.interpreter import Interpreter

    flatbuffer = with_metadata(flatbuffer, contract, metadata)
    details = Interpreter(model_content=flatbuffer).get_input_details()[0]
    scale, zero_point = details["quantization"]
    metadata = {**metadata, "input": {**metadata["input"], "dtype": np.dtype(details["dtype"]).name,
                                      "quantization": {"scale": scale, "zero_point": zero_point} if scale else None},
                "integrity": {"sha256": hashlib.sha256(flatbuffer).hexdigest()}}  # see runtime.integrity
    with atomic_path(path, lambda p: verify_model(p, calibration[:8])) as tmp:
        tmp.write_bytes(flatbuffer)
        append_associated_files(tmp, contract, json.dumps(metadata, indent=1))
    return path


def export_tflite(qat_model: keras.Model, calibration: np.ndarray, path: Path, contract: Contract,
                  metadata: dict) -> Path:
    """Full-integer int8 TFLite: int8 input and output, int8 builtin ops only."""
    return save_tflite(to_tflite(qat_model, calibration), path, contract, metadata, calibration)


# ITU-R BT.601 luma (OpenCV's and Pillow's RGB -> gray: 0.299, 0.587, 0.114) in 217ths: int8 weights hold
# 65, 127 and 25 exactly (scale 1/217), so a gray pixel repeated in R, G and B stays itself, not 1.003x
LUMA = np.array([65, 127, 25], np.float32) / 217


def pixel_input(qat_model: keras.Model, contract: Contract) -> keras.Model:
    """The QAT model behind an RGB input (a gray model: BT.601 luma first, a fixed 1x1 convolution),
    for a converter that makes that input uint8: pixel p is the value p / 255, the contract's range [0, 1]."""
    h, w, _ = contract.image_shape
    image = keras.Input((h, w, 3), name=INPUT_NAME)
    x = image
    if contract.channels == 1:
        luma = keras.layers.Conv2D(1, 1, use_bias=False, trainable=False, name="luma")
        x = luma(x)
        luma.set_weights([LUMA.reshape(1, 1, 3, 1)])
    return keras.Model(image, qat_model(x))


def export_mediapipe(qat_model: keras.Model, calibration: np.ndarray, path: Path, contract: Contract,
                     metadata: dict) -> Path:
    """The int8 TFLite as MediaPipe Tasks' ImageClassifier takes it: uint8 RGB input (pixels as they
    are), float32 probabilities; the same int8 layers. ``contract``: the model's own (gray or RGB)."""
    if contract.value_range != (0.0, 1.0):
        raise ValueError(f"a uint8 pixel input needs the input range [0, 1], this model's is "
                         f"{list(contract.value_range)}")
    rgb = dataclasses.replace(contract, channels=3)
    pixels = rgb.model_input((calibration * 255).round().astype(np.uint8))  # gray calibration: repeated
    ends = np.stack([np.zeros(rgb.image_shape, np.float32), np.ones(rgb.image_shape, np.float32)])
    # black and white pin the input's range to [0, 1], so uint8 pixel p is exactly the value p / 255
    flatbuffer = to_tflite(pixel_input(qat_model, contract), np.concatenate([ends, pixels]), tf.uint8, tf.float32)
    metadata = {**metadata, **rgb.to_metadata()}
    return save_tflite(flatbuffer, path, rgb, metadata, pixels)


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


def export_openvino(int8_onnx: Path, path: Path, metadata: dict, calibration: np.ndarray) -> Path:
    """OpenVINO IR (``path``: the .xml, the weights in the .bin beside it) of the int8 ONNX model: its
    QuantizeLinear/DequantizeLinear pairs become FakeQuantize, which the CPU plugin runs in int8. Our
    metadata is the IR's ``rt_info``; the checksum covers the graph and the weights (runtime.integrity)."""
    import openvino as ov

    from runtime.integrity import graph_digest

    model = ov.convert_model(str(int8_onnx))
    with atomic_path(path) as xml, atomic_path(path.with_suffix(".bin")):  # OpenVINO writes both names
        model.set_rt_info(json.dumps(metadata), [METADATA_KEY])
        ov.save_model(model, str(xml), compress_to_fp16=False)
        model.set_rt_info(json.dumps({**metadata, "integrity": {"sha256": graph_digest(xml)}}), [METADATA_KEY])
        ov.save_model(model, str(xml), compress_to_fp16=False)  # the same graph; the checksum in rt_info
        verify_model(xml, calibration[:8])
    return path  # the .bin is renamed first, then the .xml
