"""Upright: Fashion-MNIST's garments stand upright; a camera sees them tilted (15 degrees either
way in the simulator's sets). Most garments are mirror-symmetric, so the turn that makes the
object's signal most symmetric stands them up; shoes, seen from the side, are not, and stay as
they are (``upright``). Without OpenCV the signal stays as it is.
"""

from __future__ import annotations

import functools

import numpy as np

from .pixels import cv2, shrink

MAX_TILT = 18.0  # degrees searched either way: the simulator's 15 and a little more
SYMMETRY = 0.9  # mirror correlation at the best turn above which an object counts as symmetric
MIN_TILT = 2.0  # degrees: a smaller tilt is left as it is (the model takes it; a turn blurs a little)
TILT_SIZE = 32  # pixels: the tilt is judged on a copy about this long (a 28x28 input's crop is 56)
ELONGATION = 0.3  # (0: round, 1: a line) below it the principal axes are a few degrees off (searched instead)
KEEP = 0.1  # after the turn, the object's extent: where its signal is above this share of the peak


def turned(signal: np.ndarray, angle: float, centre: tuple[float, float], side: int) -> np.ndarray:
    """``signal`` turned by ``angle`` degrees (counter-clockwise) about ``centre``, which lands
    in the middle of a ``side`` x ``side`` canvas (pixel centres at whole numbers)."""
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    matrix[:, 2] += ((side - 1) / 2 - centre[0], (side - 1) / 2 - centre[1])
    return cv2.warpAffine(signal, matrix, (side, side), flags=cv2.INTER_LINEAR)


def symmetry(image: np.ndarray) -> float:
    """How alike ``image`` and its mirror image are (1: mirror-symmetric about the middle column)."""
    return float((image * image[:, ::-1]).sum() / max(float((image * image).sum()), 1e-12))


def extent(signal: np.ndarray) -> np.ndarray:
    """``signal`` cropped to where it is above KEEP of its peak (a signal with a positive peak)."""
    rows, cols = np.nonzero(signal > KEEP * signal.max())
    return signal[rows.min():rows.max() + 1, cols.min():cols.max() + 1]


def principal_axes(moments: dict) -> tuple[float, float]:
    """The principal axes of cv2 ``moments``: how much one dominates (0: neither, a disc or a
    square; 1: a line), and the turn in degrees (within 45 either way) that stands them upright."""
    mu20, mu02, mu11 = moments["mu20"], moments["mu02"], moments["mu11"]
    elongation = np.hypot(2 * mu11, mu20 - mu02) / max(mu20 + mu02, 1e-12)
    axis = 0.5 * np.degrees(np.arctan2(2 * mu11, mu20 - mu02))  # from x (right) towards y (down)
    return float(elongation), float((axis + 45) % 90 - 45)


def upright(signal: np.ndarray) -> np.ndarray:
    """The object's signal turned upright when it is mirror-symmetric at some tilt (else as it
    is), cropped to its extent.

    1. turns about the centre of mass, scored on a copy about TILT_SIZE pixels long: a
       mirror-symmetric object's axis is one of its principal axes (its second moments), so
       the turns tried are those within 3 degrees of the one that stands the axes upright, in
       1.5-degree steps (5 turns); a roundish object (below ELONGATION) has no clear axis:
       every 3 degrees within MAX_TILT, then 1.5 either side of the best (15 turns);
    2. no turn below SYMMETRY at the best turn (a shoe), nor for less than MIN_TILT;
    3. the turn at full size, cropped to its ``extent``.
    """
    step = max(1, -(-max(signal.shape) // TILT_SIZE))
    if cv2 is None or min(signal.shape) < 8 * step:
        return signal
    small = shrink(signal, step)
    moments = cv2.moments(small)
    if moments["m00"] <= 0:
        return signal
    centre = (moments["m10"] / moments["m00"], moments["m01"] / moments["m00"])
    side = int(np.ceil(np.hypot(*small.shape))) + 2

    @functools.cache
    def score(angle: float) -> float:
        return symmetry(turned(small, angle, centre, side))

    elongation, tilt = principal_axes(moments)
    if elongation >= ELONGATION:
        nearest = float(np.clip(round(tilt / 1.5) * 1.5, -MAX_TILT, MAX_TILT))
        best = max([a for a in (nearest + np.arange(-3.0, 3.1, 1.5)).tolist() if abs(a) <= MAX_TILT], key=score)
    else:
        best = max(np.arange(-MAX_TILT, MAX_TILT + 1, 3.0).tolist(), key=score)
        best = max((best - 1.5, best, best + 1.5), key=score)
    if abs(best) < MIN_TILT or score(best) < SYMMETRY:
        return signal
    # the centre in full-size pixels (a small pixel's centre is its block's)
    return extent(turned(signal, best, (step * centre[0] + (step - 1) / 2, step * centre[1] + (step - 1) / 2),
                         int(np.ceil(np.hypot(*signal.shape))) + 2))
