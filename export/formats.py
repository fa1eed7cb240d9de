"""The export formats: one entry per format, read by the CLI, the parity gate and the results.

A new format is one entry: its name (in parity.json), its file's suffix (the file is the model's
name and the suffix: ``fashion_int8.tflite``, ``model_int8.tflite``), the ``--format`` family that
selects it, whether the parity gate holds it to the int8 thresholds, and its converter, a function
of the export job and the target path.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.contract import Contract


# A model's name: the start of its files' names, and a C++ identifier (the TFLM array's namespace)
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def check_name(name: str) -> str:
    """``name`` if it can name a model's files, else ValueError saying what can."""
    if not NAME.fullmatch(name):
        raise ValueError(f"model name {name!r}: use 1-64 letters, digits and underscores, starting with a letter")
    return name


@dataclass
class Job:
    """Everything a converter needs: the QAT model and where its data came from."""
    qat_model: object  # a tf_keras QAT model
    architecture: str
    contract: Contract
    calibration: np.ndarray  # float32 (N, H, W, C) in the model's input range
    metadata: Callable[[str], dict]  # format name -> the metadata to embed
    out: Path
    name: str = "model"  # the model's name: its files are name + each format's suffix
    opset: int = 17
    written: dict = field(default_factory=dict)  # format name -> its file, written by this job

    def source(self, name: str) -> Path:
        """The file of format ``name`` made from this job's model: written already, or now (a format
        converted from another, asked for alone, never starts from a file of an earlier export)."""
        if name not in self.written:
            fmt = FORMATS[name]
            self.written[name] = fmt.convert(self, self.out / fmt.file(self.name))
        return self.written[name]

    @functools.cached_property
    def float_model(self):
        from export.convert import float_from_qat

        return float_from_qat(self.qat_model, self.architecture)


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str  # the file: the model's name + this
    family: str  # the --format value that selects it (besides "all")
    int8: bool  # held to the gate's int8 thresholds; a float format is their per-class baseline
    convert: Callable[[Job, Path], Path]
    open: Callable[[Path], object] | None = None  # what runs the file for the gate (.info.contract, .run);
    # None: runtime.backends.open_backend
    gate_images: int | None = None  # at most this many images for the gate (a slow runner), evenly spread

    def file(self, model: str) -> str:
        return model + self.suffix


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
    Format("tflite-int8", "_int8.tflite", "tflite", True, _tflite_int8),
    Format("onnx-float", "_float.onnx", "onnx", False, _onnx_float),
    Format("onnx-int8", "_int8.onnx", "onnx", True, _onnx_int8),
    Format("mediapipe", "_mediapipe.tflite", "mediapipe", True, _mediapipe),
    Format("openvino-int8", "_int8.xml", "openvino", True, _openvino),
    # TFLM's reference kernels take ~20 ms an image on a PC: 2,000 images resolve 0.1% of disagreement
    Format("tflm", "_tflm.cc", "tflm", True, _tflm, _open_tflm, gate_images=2000),
)}
FAMILIES = tuple(dict.fromkeys(f.family for f in FORMATS.values()))


def selected(family: str) -> list[Format]:
    """The formats ``--format family`` writes, in dependency order ("all": every one)."""
    return [f for f in FORMATS.values() if family in ("all", f.family)]


def model_name(out: Path, model: str | None = None) -> str:
    """``model``, or (None) the name of the one model whose exported files are in ``out`` ("model" when there
    are none); ValueError when several models' files are there and none is named."""
    if model is not None:
        return model
    names = {path.name[:-len(f.suffix)] for f in FORMATS.values() for path in out.glob(f"*{f.suffix}")}
    names = {name for name in names if NAME.fullmatch(name)}
    if len(names) > 1:
        raise ValueError(f"{out} holds the files of several models ({', '.join(sorted(names))}): name one (--name)")
    return names.pop() if names else "model"


def exported(out: Path, model: str | None = None) -> dict[str, Path]:
    """The exported files in ``out`` by format name: those of the model named ``model`` (``model_name``)."""
    model = model_name(out, model)
    return {f.name: out / f.file(model) for f in FORMATS.values() if (out / f.file(model)).is_file()}
