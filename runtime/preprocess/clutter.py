"""Clutter at the frame's edges: it stands out from the backdrop as a garment does, but is none.

- Black fill (``fill``): a picture warped or rotated onto the frame leaves black fill in its
  corners and along its sides (OpenCV's default border): no backdrop, and as dark as no garment.
- Bands (``straight_bands``): a table edge, a keyboard or a cuff along a side of the frame. Seen
  at an angle (a camera not square-on) its inner edge slants, but perspective keeps that edge
  straight; a garment's outline is not straight.
- Arms (``arms``): a sleeve or an arm reaching in from a side (a hand holding the garment up)
  joins the garment's mask where it touches it, and the box would take both. Seen from its side,
  such a part is about as wide as where it meets the side, until the garment begins and the mask
  widens.

All work on ``locate``'s small copy of the frame, or masks of it.
"""

from __future__ import annotations

import numpy as np

from .pixels import cv2
from .stats import median, share

BAND_COVER = 0.6  # a band runs along at least this share of its side
MAX_BAND = 0.35  # ...reaching at most this share of the frame in (a keyboard's edge: 10-25%)
BAND_GAP = 2  # ...beginning within this many pixels of the side (of locate's small copy)
BAND_FIT = 1.5  # ...and ending within this many pixels of a straight line along the side
REACH = 0.5  # an arm reaches at most half the frame in before the garment (the simulator's: 15-35%)
NECK = 1.5  # ...and the garment begins where the part grows wider than this multiple of its width at the side
FILL_LEVEL = 0.04  # darker than this (0-1) and touching the frame's edge: fill
FILL_DEPTH = 0.15  # ...reaching at most this share of the frame in (deeper: a black backdrop, as the dataset's)


def edges_touched(stats: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Whether each component of cv2's ``stats`` (x, y, w, h, area rows) touches the left, top,
    right and bottom edge of an image of ``shape``."""
    h, w = shape
    x, y, bw, bh = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    return x == 0, y == 0, x + bw >= w, y + bh >= h


def fill(small: np.ndarray) -> np.ndarray:
    """Black fill along the frame's edges (a warped or rotated picture's corners, letterbox
    bars): pixels below FILL_LEVEL connected to the edge, and their rim (one pixel). None of it
    when it reaches deeper than FILL_DEPTH into the frame: then it is a black backdrop."""
    h, w = small.shape
    none = np.zeros((h, w), bool)
    dark = small < FILL_LEVEL
    if cv2 is None or not (dark[0].any() or dark[-1].any() or dark[:, 0].any() or dark[:, -1].any()):
        return none  # most frames: nothing dark at the edge (cheap to tell)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(dark.astype(np.uint8), connectivity=8)
    edge = np.logical_or.reduce(edges_touched(stats, (h, w)))
    edge[0] = False  # label 0: what is not dark
    black = edge[labels]
    if not black.any():
        return none
    rows, cols = np.nonzero(black)
    if np.minimum(np.minimum(cols, w - 1 - cols), np.minimum(rows, h - 1 - rows)).max() > FILL_DEPTH * min(h, w):
        return none
    return cv2.dilate(black.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def side_views(image: np.ndarray) -> list[np.ndarray]:
    """``image`` seen from its top, bottom, left and right side: each view's rows go from that
    side inwards, its columns along it (views: writing to one writes to ``image``)."""
    return [image, image[::-1], image.T, image[:, ::-1].T]


def straight_line(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The least-squares line through the points (x, y), evaluated at ``at``."""
    x_mean, y_mean = x.mean(), y.mean()
    dx = x - x_mean
    slope = float((dx * (y - y_mean)).sum() / max(float((dx * dx).sum()), 1e-9))
    return y_mean + slope * (at - x_mean)


def straight_bands(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask``'s bands along the frame's sides (a table edge, a keyboard, a cuff,
    square-on or at an angle), and one more line for a band's blurred edge.

    From each side: how deep the mask runs in at each position along it (a run that begins
    within BAND_GAP of the side). A band runs along at least BAND_COVER of the side (where a
    garment lies on it, the mask runs deeper), to depths that follow a straight line (a robust
    fit: the line through the medians of the first and last thirds, refined twice on the
    depths within BAND_FIT of it) reaching at most MAX_BAND of the frame in. A garment
    touching a side makes no such line: it is too short along the side, or too deep.
    """
    bands = np.zeros(mask.shape, bool)
    for view, band in zip(side_views(mask), side_views(bands)):
        n, length = view.shape
        near = view[:BAND_GAP + 1]
        touched = near.any(0)
        if length < 6 or share(touched) < BAND_COVER:  # most sides: no band (and cheap to tell)
            continue
        start = np.where(touched, near.argmax(0), n)
        run = view | (np.arange(n)[:, None] < start[None, :])  # the gap before a run counts as in it
        depth = np.where(start < n, np.where(run.all(0), n, run.argmin(0)), 0)
        along = np.arange(length, dtype=np.float32)
        third = length // 3
        first, last = median(depth[:third]), median(depth[-third:])
        line = first + (last - first) * (along - (third - 1) / 2) / (length - third)
        for _ in range(2):
            on = (depth > 0) & (np.abs(depth - line) <= BAND_FIT)
            if np.count_nonzero(on) < 3:
                break
            line = straight_line(along[on], depth[on], along)
        if share(depth >= line - BAND_FIT) < BAND_COVER or line.max() > MAX_BAND * n:
            continue
        band |= np.arange(n)[:, None] < (np.ceil(line) + 1)[None, :]
    return bands


def arms(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask``'s arms: parts reaching in from a side to the garment (a sleeve, a
    hand holding it up), up to where the garment begins.

    Seen from a side it touches (along less than BAND_COVER of it: a band is another thing), a
    connected part of the mask whose width, line by line inwards, grows past NECK times its
    width at the side within REACH of the frame: the lines before that are the arm. A part that
    touches the side along more than half its greatest width (the garment itself, cut by the
    frame) is not one, nor a part that reaches the opposite side (it spans the frame, as a
    garment that fills the image does: its own sleeve, not an arm), nor a part that never
    widens (``object_box`` leaves it aside).
    """
    found = np.zeros(mask.shape, bool)
    touching = [view[:BAND_GAP + 1].any(0) for view in side_views(mask)]
    looked = [0 < share(t) < BAND_COVER for t in touching]
    if cv2 is None or not any(looked):  # most frames: nothing touches a side (cheap to tell)
        return found
    labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[1]
    for look, parts, arm in zip(looked, side_views(labels), side_views(found)):
        if not look:
            continue
        for label in np.unique(parts[:BAND_GAP + 1]):
            if label == 0:  # what is not in the mask
                continue
            part = parts == label
            width = part.sum(1)  # line by line, from the side inwards
            at_side = max(1.0, float(median(width[:BAND_GAP + 1])))
            wider = np.flatnonzero(width > NECK * at_side)
            if wider.size == 0 or at_side > 0.5 * width.max() or wider[0] > REACH * len(width):
                continue
            if part[-1].any():  # it spans the frame, as in an image the garment fills: its own sleeve
                continue
            arm[:wider[0]] |= part[:wider[0]]
    return found
