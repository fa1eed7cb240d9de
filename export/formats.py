"""The export formats: one entry per format, read by the CLI, the parity gate and the results.

A new format is one entry: its name (in parity.json), its file name, the ``--format``
family that selects it, whether the parity gate holds it to the int8 thresholds, and its
converter, a function of the export job and the target path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.contract import Contract


@dataclass
class Job:
    """Everything a converter needs: the QAT model and where its data came from."""
    qat_model: object  # a tf_keras QAT model
    architecture: str
    contract: Contract
    calibration: np.ndarray  # float32 (N, H, W, C) in the model's input range
    metadata: Callable[[str], dict]  # format name -> the metadata to embed
    out: Path
    opset: int = 17
    written: dict = field(default_factory=dict)  # format name -> its file, written by this job

    def source(self, name: str) -> Path:
        """The file of format ``name`` made from this job's model: written already, or now (a format
        converted from another, asked for alone, never starts from a file of an earlier export)."""
        if name not in self.written:
            fmt = FORMATS[name]
            self.written[name] = fmt.convert(self, self.out / fmt.file)
        return self.written[name]

    @functools.cached_property
    def float_model(self):
        from export.convert import float_from_qat

        return float_from_qat(self.qat_model, self.architecture)


@dataclass(frozen=True)
class Format:
    name: str
    file: str
    family: str  # the --format value that selects it (besides "all")
    int8: bool  # held to the gate's int8 thresholds; a float format is their per-class baseline
    convert: Callable[[Job, Path], Path]
    open: Callable[[Path], object] | None = None  # what runs the file for the gate (.info.contract, .run);
    # None: runtime.backends.open_backend
    gate_images: int | None = None  # at most this many images for the gate (a slow runner), evenly spread


def _tflite_int8(job: Job, path: Path) -> Path:
    from export.convert import export_tflite

    return export_tflite(job.qat_model, job.calibration, path, job.contract, job.metadata("tflite-int8"))


def _mediapipe(job: Job, path: Path) -> Path:
    from export.convert import export_mediapipe

    return export_mediapipe(job.qat_model, job.calibration, path, job.contract, job.metadata("mediapipe"))


def _onnx_float(job: Job, path: Path) -> Path:
    from export.convert import export_onnx_float

    return export_onnx_float(job.float_model, path, job.metadata("onnx-float"), job.calibration, job.opset)


def _onnx_int8(job: Job, path: Path) -> Path:
    from export.convert import export_onnx_int8

    return export_onnx_int8(job.source("onnx-float"), path, job.metadata("onnx-int8"), job.calibration)


def _openvino(job: Job, path: Path) -> Path:
    from export.convert import export_openvino

    return export_openvino(job.source("onnx-int8"), path, job.metadata("openvino-int8"), job.calibration)


def _tflm(job: Job, path: Path) -> Path:
    from export.micro import export_tflm

    return export_tflm(job.source("tflite-int8"), path, job.contract, job.metadata("tflm"))


def _open_tflm(path: Path):
    from export.micro import MicroBackend

    return MicroBackend(path)


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("tflite-int8", "fashion_int8.tflite", "tflite", True, _tflite_int8),
    Format("onnx-float", "fashion_float.onnx", "onnx", False, _onnx_float),
    Format("onnx-int8", "fashion_int8.onnx", "onnx", True, _onnx_int8),
    Format("mediapipe", "fashion_mediapipe.tflite", "mediapipe", True, _mediapipe),
    Format("openvino-int8", "fashion_int8.xml", "openvino", True, _openvino),
    # TFLM's reference kernels take ~20 ms an image on a PC: 2,000 images resolve 0.1% of disagreement
    Format("tflm", "fashion_tflm.cc", "tflm", True, _tflm, _open_tflm, gate_images=2000),
)}
FAMILIES = tuple(dict.fromkeys(f.family for f in FORMATS.values()))


def selected(family: str) -> list[Format]:
    """The formats ``--format family`` writes, in dependency order ("all": every one)."""
    return [f for f in FORMATS.values() if family in ("all", f.family)]
