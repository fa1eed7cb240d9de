"""Inference backends: one class per model format, picked by file suffix.

Each takes a float32 batch (N, H, W, C) in the model's input range (its contract) and
returns class probabilities (N, classes) as float32. Layout (NCHW graphs), quantization
and logits are handled here, from the model's own tensors and metadata.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.contract import Contract
from runtime.metadata import METADATA_KEY, ModelError, ModelInfo, read_tflite_metadata


class Backend(Protocol):
    info: ModelInfo

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def run_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Like ``run`` for uint8 pixels (N, H, W, C) in 0-255."""
        ...


def to_graph(contract: Contract, batch: np.ndarray) -> np.ndarray:
    """NHWC images -> the graph's layout."""
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2)) if contract.layout == "NCHW" else batch


def to_probabilities(contract: Contract, out: np.ndarray) -> np.ndarray:
    if contract.output == "logits":
        out = np.exp(out - out.max(1, keepdims=True))
        out /= out.sum(1, keepdims=True)
    return out


def check_threads(num_threads: int | None) -> int | None:
    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int)
                                    or num_threads < 1):
        raise ValueError(f"num_threads must be a positive integer or None (all cores), got {num_threads!r}")
    return num_threads


class OnnxBackend:
    def __init__(self, path: Path, num_threads: int | None = None, spin: bool = True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = num_threads or 0  # 0: onnxruntime's default, all cores
        options.inter_op_num_threads = 1
        # Spinning keeps threads hot between calls (lowest latency) at the cost of idle CPU.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelError(f"{path}: onnxruntime cannot load it ({type(e).__name__}: "
                             f"{str(e)[:200]}); the file may be truncated or not an ONNX model: "
                             "re-export it or pass another --model") from e
        custom = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in custom:
            raise ModelError(f"{path}: no '{METADATA_KEY}' metadata; export models with "
                             "`python -m export --format onnx` (the keys are in docs/model-contract.md)")
        self.info = ModelInfo.from_json(custom[METADATA_KEY], path)
        self.info.check_integrity(path)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(float)":
            raise ModelError(f"{path}: the graph must take one float32 image tensor, it takes "
                             f"{[(i.name, i.type) for i in inputs]}")
        self.info.check_graph(inputs[0].shape, outputs[0].shape, path)
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.pixel_values = self.info.contract.pixel_values()

    def run(self, batch: np.ndarray) -> np.ndarray:
        contract = self.info.contract
        out = self.session.run([self.output_name], {self.input_name: to_graph(contract, batch)})[0]
        return to_probabilities(contract, out)

    def run_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.run(self.pixel_values[pixels])


class TFLiteBackend:
    """LiteRT's interpreter holds its tensors in place: one call at a time (a lock), so a
    Predictor shared by threads is safe; for parallel throughput use one Predictor per thread."""

    def __init__(self, path: Path, num_threads: int | None = None, spin: bool = True):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise ModelError(f"{path}: .tflite models need LiteRT: pip install 'fashion-edge[tflite]' "
                             "(ai-edge-litert), or use an .onnx model") from e
        self.info = ModelInfo.from_json(read_tflite_metadata(path), path)
        self.info.check_integrity(path)
        try:
            self.interpreter = Interpreter(model_path=str(path),
                                           num_threads=num_threads or os.cpu_count() or 1)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{path}: LiteRT cannot load it ({e}); the file may be truncated "
                             "or corrupt: re-export it or pass another --model") from e
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or inputs[0]["dtype"] not in (np.float32, np.int8, np.uint8):
            raise ModelError(f"{path}: the graph must take one float32, int8 or uint8 image tensor, it takes "
                             f"{[(i['name'], np.dtype(i['dtype']).name) for i in inputs]}")
        inp, out = inputs[0], outputs[0]
        self.info.check_graph(list(inp["shape_signature"]), list(out["shape_signature"]), path)
        self.input_index, self.output_index = inp["index"], out["index"]
        self.input_dtype = inp["dtype"]
        self.input_scale, self.input_zero = inp["quantization"]
        self.output_scale, self.output_zero = out["quantization"]
        if self.input_scale:  # q = x / scale + zero_point, within the integer type's range
            limits = np.iinfo(self.input_dtype)
            self.quant_limits = (float(limits.min), float(limits.max))
        # uint8 pixels map to the input type through a 256-entry table: no float pass
        self.pixel_table = self.as_input(self.info.contract.pixel_values())
        self.batch = int(inp["shape"][0])
        self.lock = threading.Lock()  # resize, set, invoke and read back are one step

    def _resize(self, n: int) -> None:
        if n != self.batch:
            self.interpreter.resize_tensor_input(self.input_index, [n, *self.info.contract.graph_input_shape])
            self.interpreter.allocate_tensors()
            self.batch = n

    def quantize(self, batch: np.ndarray) -> np.ndarray:
        q = batch * np.float32(1 / self.input_scale) + np.float32(self.input_zero)
        np.rint(q, out=q)
        return np.clip(q, *self.quant_limits, out=q).astype(self.input_dtype)

    def as_input(self, batch: np.ndarray) -> np.ndarray:
        """Float values in the model's range -> the input tensor's type."""
        return self.quantize(batch) if self.input_scale else batch.astype(self.input_dtype, copy=False)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._invoke(self.as_input(batch))

    def run_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self._invoke(self.pixel_table[pixels])

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        batch = to_graph(self.info.contract, batch)
        with self.lock:
            self._resize(len(batch))
            self.interpreter.set_tensor(self.input_index, batch)
            self.interpreter.invoke()
            out = self.interpreter.get_tensor(self.output_index).astype(np.float32)
        if self.output_scale:
            out -= self.output_zero
            out *= self.output_scale
        return to_probabilities(self.info.contract, out)


class OpenVINOBackend:
    """OpenVINO's CPU plugin on an IR (``.xml`` + ``.bin``), at float32 precision: on CPUs with AVX-512
    BF16 or AMX it would otherwise pick bfloat16 and drift from the other formats. One call at a time."""

    def __init__(self, path: Path, num_threads: int | None = None, spin: bool = True):
        try:
            import openvino as ov
        except ImportError as e:
            raise ModelError(f"{path}: .xml models need OpenVINO: pip install 'fashion-edge[openvino]', "
                             "or use an .onnx or .tflite model") from e
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except RuntimeError as e:
            raise ModelError(f"{path}: OpenVINO cannot read it ({str(e)[:200]}); the .xml or its .bin may be "
                             "truncated or missing: re-export it with `python -m export --format openvino`") from e
        if not model.has_rt_info([METADATA_KEY]):
            raise ModelError(f"{path}: no '{METADATA_KEY}' metadata; export models with "
                             "`python -m export --format openvino`")
        self.info = ModelInfo.from_json(model.get_rt_info([METADATA_KEY]).astype(str), path)
        self.info.check_integrity(path)
        if len(model.inputs) != 1 or len(model.outputs) != 1 or model.input().get_element_type() != ov.Type.f32:
            raise ModelError(f"{path}: the graph must take one float32 image tensor and give one output")

        def dims(port):
            return [-1 if d.is_dynamic else d.get_length() for d in port.get_partial_shape()]

        self.info.check_graph(dims(model.input()), dims(model.output()), path)
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": num_threads or 0}
        self.compiled = core.compile_model(model, "CPU", config)
        self.pixel_values = self.info.contract.pixel_values()
        self.lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        contract = self.info.contract
        with self.lock:  # share_inputs=False: OpenVINO would otherwise read the caller's array in place
            out = self.compiled(to_graph(contract, batch), share_inputs=False)[0]
        return to_probabilities(contract, np.array(out, dtype=np.float32))

    def run_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.run(self.pixel_values[pixels])


BACKENDS = {".onnx": OnnxBackend, ".tflite": TFLiteBackend, ".xml": OpenVINOBackend}


def model_bytes(path: str | Path) -> int:
    """A model's size on disk: an OpenVINO IR's .xml and the .bin of its weights together."""
    path = Path(path)
    weights = path.with_suffix(".bin")
    return path.stat().st_size + (weights.stat().st_size if path.suffix.lower() == ".xml" and weights.is_file() else 0)


def open_backend(path: str | Path, num_threads: int | None = None, spin: bool = True) -> Backend:
    """Open ``path`` with the backend its suffix names; every failure is a ModelError.

    A bad ``num_threads`` (not a positive integer) is a ValueError: the model is fine.
    """
    path = Path(path)
    check_threads(num_threads)
    backend = BACKENDS.get(path.suffix.lower())
    if backend is None:
        raise ModelError(f"{path}: unsupported model format {path.suffix!r}; supported: "
                         f"{', '.join(BACKENDS)}")
    if not path.is_file():
        raise ModelError(f"{path}: no such model file; run `python -m export --format all` "
                         "or pass an existing --model")
    return backend(path, num_threads=num_threads, spin=spin)
