"""The metadata embedded in every exported model (read back by runtime.metadata)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from runtime.labels import CLASS_NAMES
from runtime.metadata import FORMAT_VERSION


def model_version(qat_path: Path) -> str:
    """A version that changes whenever the trained model does: date + content hash."""
    digest = hashlib.sha256(qat_path.read_bytes()).hexdigest()[:10]
    day = time.strftime("%Y%m%d", time.gmtime(qat_path.stat().st_mtime))
    return f"{day}-{digest}"


def training_summary(report_path: Path) -> dict:
    if not report_path.is_file():
        return {}
    report = json.loads(report_path.read_text())
    return {
        "architecture": report.get("architecture"),
        "parameters": report.get("parameters"),
        "macs": report.get("macs"),
        "test_accuracy": report.get("qat", {}).get("test_accuracy"),
        "float_test_accuracy": report.get("float", {}).get("test_accuracy"),
        "data_sha256": report.get("data", {}).get("sha256"),
    }


def build_metadata(fmt: str, version: str, training: dict, *, dtype: str = "float32",
                   quantization: dict | None = None) -> dict:
    """``fmt``: e.g. "tflite-int8"; ``quantization``: the input's scale and zero point."""
    return {
        "format_version": FORMAT_VERSION,
        "format": fmt,
        "model_version": version,
        "labels": list(CLASS_NAMES),
        "input": {
            "shape": [-1, 28, 28, 1],
            "layout": "NHWC",
            "dtype": dtype,
            "range": [0.0, 1.0],
            "quantization": quantization,
        },
        "output": {"shape": [-1, len(CLASS_NAMES)], "kind": "probabilities (softmax)"},
        "preprocessing": {
            "description": "grayscale 28x28, bright garment on a black background, centred, "
                           "longest side filling the frame; value = uint8 pixel / 255",
            "scale": 1 / 255,
            "mean": 0.0,
            "std": 1.0,
        },
        "training": training,
    }
