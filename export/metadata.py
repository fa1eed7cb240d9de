"""The metadata embedded in every exported model: the data's contract plus provenance."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from runtime.contract import Contract


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


def build_metadata(fmt: str, version: str, training: dict, contract: Contract, *,
                   dtype: str = "float32", quantization: dict | None = None) -> dict:
    """``fmt``: e.g. "tflite-int8"; ``quantization``: the input's scale and zero point."""
    meta = contract.to_metadata()
    meta["input"].update(dtype=dtype, quantization=quantization)
    return {**meta, "format": fmt, "model_version": version, "training": training}
