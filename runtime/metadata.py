"""The metadata every exported model carries: labels, input contract, provenance.

ONNX models keep it as the JSON value of ``metadata_props[METADATA_KEY]``; TFLite models
as the zip member ``METADATA_MEMBER`` appended to the flatbuffer (the same trick as
tflite-support's associated files), readable with the standard library alone.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

METADATA_KEY = "fashion_edge"
METADATA_MEMBER = "fashion_edge.json"
FORMAT_VERSION = 1


class ModelError(RuntimeError):
    """A model file is missing, truncated, corrupt, unsupported or lacks our metadata."""


@dataclass(frozen=True)
class ModelInfo:
    labels: tuple[str, ...]
    input_shape: tuple[int, int, int]  # height, width, channels of one image
    layout: str  # "NHWC"
    pixel_range: tuple[float, float]  # the float value range the model expects
    version: str
    test_accuracy: float | None
    raw: dict

    @classmethod
    def from_json(cls, text: str, path: Path) -> ModelInfo:
        try:
            meta = json.loads(text)
            return cls(labels=tuple(meta["labels"]),
                       input_shape=tuple(meta["input"]["shape"][-3:]),
                       layout=meta["input"]["layout"],
                       pixel_range=tuple(meta["input"]["range"]),
                       version=str(meta["model_version"]),
                       test_accuracy=meta.get("training", {}).get("test_accuracy"),
                       raw=meta)
        except (ValueError, KeyError, TypeError) as e:
            raise ModelError(f"{path}: invalid embedded metadata ({e!r}); re-export the model "
                             "with `python -m export`") from e


def read_tflite_metadata(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(METADATA_MEMBER).decode()
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise ModelError(f"{path}: no {METADATA_MEMBER} inside; export models with "
                         "`python -m export --format tflite`") from e
