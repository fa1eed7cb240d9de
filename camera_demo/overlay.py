"""Drawing: the guide box, top-k labels with confidence bars, FPS and inference time."""

from __future__ import annotations

import time
from collections import deque

import cv2
import numpy as np

from runtime import Prediction, Roi

GUIDE = (0, 220, 255)  # BGR amber: where to hold the garment
FOUND = (80, 220, 80)
TEXT = (255, 255, 255)
PANEL = (30, 30, 30)
BAR = (80, 200, 80)
FONT = cv2.FONT_HERSHEY_SIMPLEX
ROW = 22  # pixels per label in the panel


class FpsMeter:
    """Frames per second over a sliding window of the last ``window`` frames."""

    def __init__(self, window: int = 30):
        self.stamps: deque[float] = deque(maxlen=window)

    def tick(self) -> float:
        self.stamps.append(time.perf_counter())
        if len(self.stamps) < 2:
            return 0.0
        return (len(self.stamps) - 1) / (self.stamps[-1] - self.stamps[0])


def guide_box(width: int, height: int, fraction: float = 0.8) -> Roi:
    """A centred square covering ``fraction`` of the frame height."""
    side = int(min(width, height) * fraction)
    return Roi((width - side) // 2, (height - side) // 2, side, side)


def panel_height(rows: int) -> int:
    """The label panel: one row per shown label, then the FPS line."""
    return 26 + ROW * rows


def draw_overlay(frame: np.ndarray, prediction: Prediction | None, roi: Roi | None,
                 fps: float, infer_ms: float, top_k: int = 3) -> np.ndarray:
    """Draw in place on ``frame`` (BGR) and return it; ``roi`` is the guide box, if any.

    The panel lists the ``top_k`` most likely labels (fewer when the model has fewer), as
    many as fit in the frame.
    """
    x, y, w, h = roi or (0, 0, frame.shape[1], frame.shape[0])
    if roi:
        cv2.rectangle(frame, (x, y), (x + w, y + h), GUIDE, 2)
    fits = max(1, (frame.shape[0] - panel_height(0)) // ROW)
    ranked = prediction.top_k(min(top_k, fits)) if prediction is not None else []
    panel_h = panel_height(len(ranked) if prediction is not None else min(top_k, fits))
    cv2.rectangle(frame, (0, 0), (260, panel_h), PANEL, -1)
    if prediction is not None and prediction.object_found and prediction.box:
        bx, by, bw, bh = prediction.box
        cv2.rectangle(frame, (bx, by), (bx + bw, by + bh), FOUND, 1)
    for rank, (label, confidence) in enumerate(ranked):
        top = 8 + rank * ROW
        cv2.rectangle(frame, (110, top + 2), (110 + int(140 * confidence), top + 16), BAR, -1)
        cv2.putText(frame, f"{label[:12]}", (6, top + 14), FONT, 0.45, TEXT, 1, cv2.LINE_AA)
        cv2.putText(frame, f"{confidence:.0%}", (114, top + 14), FONT, 0.4, TEXT, 1, cv2.LINE_AA)
    if prediction is not None and not prediction.object_found:
        cv2.putText(frame, "no object in the box", (x + 6, y + 22), FONT, 0.6, GUIDE, 2, cv2.LINE_AA)
    cv2.putText(frame, f"{fps:5.1f} FPS  {infer_ms:4.1f} ms", (6, panel_h - 6), FONT, 0.45, TEXT, 1,
                cv2.LINE_AA)
    return frame


def draw_note(frame: np.ndarray, text: str) -> np.ndarray:
    """One line at the bottom left (e.g. "red cup: 12 saved" while collecting), in place."""
    (w, h), _ = cv2.getTextSize(text, FONT, 0.55, 1)
    bottom = frame.shape[0] - 6
    cv2.rectangle(frame, (0, bottom - h - 8), (w + 12, frame.shape[0]), PANEL, -1)
    cv2.putText(frame, text, (6, bottom - 2), FONT, 0.55, TEXT, 1, cv2.LINE_AA)
    return frame
