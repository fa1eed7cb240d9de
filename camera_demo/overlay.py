"""Drawing: the guide box, top-k labels with confidence bars, FPS and inference time, and
advice when the frame is poor (too dark, nothing found, the object not in the box, not
sure) instead of a confident-looking wrong label."""

from __future__ import annotations

import time
from collections import deque

import cv2
import numpy as np

from runtime import Prediction, Roi

GUIDE = (0, 220, 255)  # BGR amber: where to hold the object
FOUND = (80, 220, 80)
TEXT = (255, 255, 255)
PANEL = (30, 30, 30)
BAR = (80, 200, 80)
MUTED = (150, 150, 150)  # labels and bars of an answer not to be trusted
MUTED_BAR = (90, 90, 90)
FONT = cv2.FONT_HERSHEY_SIMPLEX
ROW = 22  # pixels per label in the panel
# Advice thresholds. DARK: the 0-255 brightness that the brightest tenth of the region looked at
# does not reach in a dark frame (a webcam's gain then leaves mostly noise; a backdrop is
# 120-235, and a bright object on black still passes). CONFIDENT: the top label's
# probability below which the answer is "not sure"; on the desk sets of python -m
# train.camera_eval the answers above it are right about 90% of the time.
DARK = 40
CONFIDENT = 0.5
SAMPLE = 8  # brightness from every 8th pixel each way: a few thousand pixels, enough for a quantile
BRIGHT_SHARE = 0.9  # the quantile: the brightest tenth
TOO_DARK = "too dark: add light"
NOTHING = "nothing found in the box"
MOVE_IN = "move the object into the box"
NOT_SURE = "not sure: hold it still"


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


def brightness(frame: np.ndarray, roi: Roi | None) -> float:
    """How bright (0-255) the brightest tenth of ``roi`` (or the whole frame) is, from a sparse
    sample of its pixels' mean over the channels."""
    x, y, w, h = roi or (0, 0, frame.shape[1], frame.shape[0])
    region = frame[y:y + h:SAMPLE, x:x + w:SAMPLE]
    if region.ndim == 3:
        region = region[..., :3].mean(axis=2)  # alpha is not light
    if region.size == 0:
        return 0.0
    k = min(region.size - 1, int(BRIGHT_SHARE * region.size))
    return float(np.partition(region.ravel(), k)[k])


def touches_edge(box: tuple[int, int, int, int], roi: Roi | None, width: int, height: int, slack: int = 2) -> bool:
    """Whether ``box`` (x, y, w, h, frame coordinates) reaches the edge of ``roi`` (or the frame)."""
    rx, ry, rw, rh = roi or (0, 0, width, height)
    x, y, w, h = box
    return x <= rx + slack or y <= ry + slack or x + w >= rx + rw - slack or y + h >= ry + rh - slack


def advice(frame: np.ndarray, prediction: Prediction | None, roi: Roi | None) -> str | None:
    """What to tell the user about a poor frame, or None when the answer can be shown.

    In order: too dark; nothing stood out; the object runs off the guide box (or the
    segmentation was not sound: ``object_found`` false with a box); the model is not sure.
    Call it on the frame before the overlay is drawn on it."""
    if brightness(frame, roi) < DARK:
        return TOO_DARK
    if prediction is None:
        return None
    if not prediction.object_found:
        return NOTHING if prediction.box is None else MOVE_IN
    if roi is not None and prediction.box is not None and touches_edge(prediction.box, roi, frame.shape[1],
                                                                      frame.shape[0]):
        return MOVE_IN  # only in a guide box: a photo or a recording may be cropped to the object
    if prediction.confidence < CONFIDENT:
        return NOT_SURE
    return None


def panel_height(rows: int) -> int:
    """The label panel: one row per shown label, then the FPS line."""
    return 26 + ROW * rows


def draw_overlay(frame: np.ndarray, prediction: Prediction | None, roi: Roi | None,
                 fps: float, infer_ms: float, top_k: int = 3, note: str | None = None) -> np.ndarray:
    """Draw in place on ``frame`` (BGR) and return it; ``roi`` is the guide box, if any.

    The panel lists the ``top_k`` most likely labels (fewer when the model has fewer), as
    many as fit in the frame. ``note`` (see ``advice``) is written at the bottom of the box,
    and the labels are then greyed: the answer is not to be trusted.
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
    text, bar = (MUTED, MUTED_BAR) if note else (TEXT, BAR)
    for rank, (label, confidence) in enumerate(ranked):
        top = 8 + rank * ROW
        cv2.rectangle(frame, (110, top + 2), (110 + int(140 * confidence), top + 16), bar, -1)
        cv2.putText(frame, f"{label[:12]}", (6, top + 14), FONT, 0.45, text, 1, cv2.LINE_AA)
        cv2.putText(frame, f"{confidence:.0%}", (114, top + 14), FONT, 0.4, text, 1, cv2.LINE_AA)
    if note:
        cv2.putText(frame, note, (x + 6, y + h - (34 if roi is None else 12)), FONT, 0.6, GUIDE, 2, cv2.LINE_AA)
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
