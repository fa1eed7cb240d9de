"""What the camera demo writes: a JSON line per frame (``--headless``, ``--json``), PNGs of the guide
box's crop (``--collect``) and of the screen (the s key)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from runtime import Prediction, Roi
from runtime.collect import new_image_path
from runtime.files import atomic_path, write_error


def frame_record(frame: int, elapsed_s: float, prediction: Prediction, latency_ms: float,
                 infer_ms: float, note: str | None = None) -> dict:
    """The JSON line of one frame (``--headless`` or ``--json``); ``advice`` is what the overlay
    told the user about a poor frame (see camera_demo.overlay.advice), else null."""
    return {"frame": frame, "t": round(elapsed_s, 4), "label": prediction.label,
            "index": prediction.index, "confidence": round(prediction.confidence, 4),
            "object_found": prediction.object_found, "advice": note, "latency_ms": round(latency_ms, 3),
            "infer_ms": round(infer_ms, 3)}


def emit_json_line(record: dict, flush: bool = False) -> bool:
    """One JSON object per line on stdout (frames buffered; the summary flushes).

    False when stdout was closed by its reader (a broken pipe): stdout then goes to
    /dev/null, so that nothing (not even the interpreter's last flush) fails on it again."""
    try:
        print(json.dumps(record), flush=flush)
        return True
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return False


def roi_crop(frame: np.ndarray, roi: Roi | None) -> np.ndarray:
    """A copy of what the model looks at: ``roi`` of ``frame``, or all of it (taken before the overlay is drawn)."""
    if roi is None:
        return frame.copy()
    x, y, w, h = roi
    return frame[y:y + h, x:x + w].copy()


def save_png(image: np.ndarray, path: Path) -> Path | None:
    """Write ``image`` to ``path`` atomically; a failure is reported and the demo goes on."""
    try:
        with atomic_path(path) as tmp:
            if not cv2.imwrite(str(tmp), image):
                raise OSError(f"OpenCV could not write {tmp.name}")
    except OSError as e:
        print(f"warning: {write_error(e, path)}", file=sys.stderr)
        return None
    return path


def save_training_image(image: np.ndarray, folder: Path, label: str, number: int) -> Path | None:
    """Save ``image`` as a PNG under a new name in ``folder``."""
    return save_png(image, new_image_path(folder, label, number))


def save_screenshot(frame: np.ndarray, folder: Path, number: int) -> Path | None:
    """Save ``frame`` as a PNG in ``folder``."""
    shot = save_png(frame, folder / f"camera_demo_{time.strftime('%Y%m%d_%H%M%S')}_{number}.png")
    if shot is not None:
        print(f"saved {shot}", file=sys.stderr)
    return shot
