"""Inference backends: one class per model format, picked by file suffix.

Each takes a float32 batch (N, 28, 28, 1) in the model's pixel range and returns class
probabilities (N, classes) as float32. Quantization parameters come from the model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from runtime.metadata import METADATA_KEY, ModelError, ModelInfo, read_tflite_metadata



class Backend(Protocol):
    info: ModelInfo

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def run_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Like ``run`` for uint8 pixels (N, 28, 28, 1) in 0-255."""
        ...


def unit_scale(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) * np.float32(1 / 255)


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
                             "`python -m export --format onnx`")
        self.info = ModelInfo.from_json(custom[METADATA_KEY], path)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def run_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.run(unit_scale(pixels))


class TFLiteBackend:
    def __init__(self, path: Path, num_threads: int | None = None, spin: bool = True):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise ModelError(f"{path}: .tflite models need LiteRT: pip install 'fashion-edge[tflite]' "
                             "(ai-edge-litert), or use an .onnx model") from e
        self.info = ModelInfo.from_json(read_tflite_metadata(path), path)
        try:
            self.interpreter = Interpreter(model_path=str(path),
                                           num_threads=num_threads or os.cpu_count() or 1)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{path}: LiteRT cannot load it ({e}); the file may be truncated "
                             "or corrupt: re-export it or pass another --model") from e
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        self.input_index, self.output_index = inp["index"], out["index"]
        self.input_dtype = inp["dtype"]
        self.input_scale, self.input_zero = inp["quantization"]
        self.output_scale, self.output_zero = out["quantization"]
        self.pixel_table = None
        if self.input_scale:  # q = x / scale + zero_point, within the integer type's range
            limits = np.iinfo(self.input_dtype)
            self.quant_limits = (float(limits.min), float(limits.max))
            # uint8 pixels map to the input type through a 256-entry table: no float pass
            self.pixel_table = self.quantize(unit_scale(np.arange(256, dtype=np.uint8)))
        self.batch = int(inp["shape"][0])

    def _resize(self, n: int) -> None:
        if n != self.batch:
            self.interpreter.resize_tensor_input(self.input_index, [n, *self.info.input_shape])
            self.interpreter.allocate_tensors()
            self.batch = n

    def quantize(self, batch: np.ndarray) -> np.ndarray:
        q = batch * np.float32(1 / self.input_scale) + np.float32(self.input_zero)
        np.rint(q, out=q)
        return np.clip(q, *self.quant_limits, out=q).astype(self.input_dtype)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._invoke(self.quantize(batch) if self.input_scale else batch)

    def run_pixels(self, pixels: np.ndarray) -> np.ndarray:
        if self.pixel_table is None:
            return self.run(unit_scale(pixels))
        return self._invoke(self.pixel_table[pixels])

    def _invoke(self, batch: np.ndarray) -> np.ndarray:
        self._resize(len(batch))
        self.interpreter.set_tensor(self.input_index, batch)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output_index).astype(np.float32)
        if self.output_scale:
            out -= self.output_zero
            out *= self.output_scale
        return out


BACKENDS = {".onnx": OnnxBackend, ".tflite": TFLiteBackend}


def open_backend(path: str | Path, num_threads: int | None = None, spin: bool = True) -> Backend:
    """Open ``path`` with the backend its suffix names; every failure is a ModelError."""
    path = Path(path)
    backend = BACKENDS.get(path.suffix.lower())
    if backend is None:
        raise ModelError(f"{path}: unsupported model format {path.suffix!r}; supported: "
                         f"{', '.join(BACKENDS)}")
    if not path.is_file():
        raise ModelError(f"{path}: no such model file; run `python -m export --format all` "
                         "or pass an existing --model")
    return backend(path, num_threads=num_threads, spin=spin)
