"""Locate: find the object against the backdrop in a grayscale frame (``locate``).

On a small copy of the frame (``small_copy``): the backdrop surface fitted to its border
(``backdrop``), black fill at the edges left out; what departs from it, darker or lighter (the
polarity: the strongest departure), above a threshold; bands along the sides and arms reaching
in (``clutter``) left out and the surface fitted again without them; then the garment's box
(``object_box``): its mask starting above the backdrop's texture, the largest blob clear of the
frame's edges and the pieces around it, and whether it is sound.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .backdrop import border_geometry, fit_background, plane
from .clutter import arms, edges_touched, fill, straight_bands
from .pixels import cv2, resize, shrink, to_unit
from .stats import otsu, quantiles, share, spread

WORK_SIZE = 96  # frames are analysed with their longest side about this long: fast, enough
MIN_CONTRAST = 0.08  # object-vs-background difference (0-1) below which nothing is there
MARGIN = 0.0  # box margin, as a fraction of its longest side: none, as the dataset's longest side touches the edge
MERGE_ROUNDS = 4  # pieces merged into the garment's box: enough for a sandal's straps
# The object's mask starts at least this many robust standard deviations of the backdrop's texture
# above the backdrop: a faint garment's threshold otherwise sits among a blotchy desk's peaks,
# which join its box (5 did best on desk-like frames, of 3 to 8).
TEXTURE_THRESHOLD = 5.0


@dataclass(frozen=True)
class Located:
    """Where ``locate`` found the object, and the backdrop it stands out from."""
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in full-resolution pixels
    coef: np.ndarray  # the backdrop surface (see fit_background)
    light_backdrop: bool  # a dark object on a light backdrop
    sound: bool = True  # the object is whole and clear of clutter (see object_box); else a best guess
    texture: float = 0.0  # the backdrop's robust spread around the backdrop map (0-1)
    clarity: float = 0.0  # how far the object stands out: its threshold over the backdrop's texture


def object_box(signal: np.ndarray, threshold: float) -> tuple[tuple[int, int, int, int] | None, bool]:
    """Bounding box (x, y, w, h) of the garment among the pixels above ``threshold``, and
    whether it is sound: whole (clear of the frame's edges, or spanning it edge to edge) and
    standing clear of clutter.

    Bands along the sides and arms reaching in go first (``straight_bands``, ``arms``). With
    OpenCV: the largest connected blob that does not touch the frame's edge (a table edge or a
    sleeve coming into view does), plus the blobs that overlap its box (a sandal's straps);
    without OpenCV: the box of all pixels above the threshold.
    """
    mask = signal > threshold
    mask = mask & ~straight_bands(mask)
    mask = (mask & ~arms(mask)).astype(np.uint8)
    if np.count_nonzero(mask) < max(4, signal.size // 400):
        return None, False
    h, w = mask.shape
    if cv2 is None:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
        return box, box[0] > 0 and box[1] > 0 and box[0] + box[2] < w and box[1] + box[3] < h
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    blobs = stats[1:count]  # x, y, w, h, area; label 0 is the background
    left, top, right, bottom = edges_touched(blobs, (h, w))
    # whole: clear of every edge, or spanning the frame from one edge to the opposite one (a
    # garment framed as tightly as the dataset's); a blob at one side or a corner is cut off
    inner = ~(left | top | right | bottom) | (left & right) | (top & bottom)
    sound = bool(inner.any() and blobs[inner, 4].max() >= blobs[:, 4].max() * 0.2)
    pool = blobs[inner] if sound else blobs
    x, y, bw, bh, _ = pool[np.argmax(pool[:, 4])]
    box = np.array([x, y, x + bw, y + bh])
    pad = 0.15 * max(bw, bh)
    near = pool[pool[:, 4] >= 2]
    ends = near[:, :2] + near[:, 2:4]
    for _ in range(MERGE_ROUNDS):  # merge the pieces that overlap the padded box, as it grows
        touching = ((near[:, 0] < box[2] + pad) & (near[:, 1] < box[3] + pad)
                    & (ends[:, 0] > box[0] - pad) & (ends[:, 1] > box[1] - pad))
        grown = np.concatenate([np.minimum(box[:2], near[touching, :2].min(0)),
                                np.maximum(box[2:], ends[touching].max(0))]) if touching.any() else box
        if np.array_equal(grown, box):
            break
        box = grown
    x0, y0, x1, y1 = (int(v) for v in box)
    return (x0, y0, x1 - x0, y1 - y0), sound


def small_copy(gray: np.ndarray) -> tuple[np.ndarray, float, float]:
    """A copy with its longest side about WORK_SIZE, as float in [0, 1], and its scale (x, y).

    Speed, and the averaging suppresses sensor noise; the work (and border_geometry's cache)
    stays bounded by WORK_SIZE whatever the frame's shape."""
    h, w = gray.shape
    step = max(1, -(-max(h, w) // WORK_SIZE))
    if min(h, w) // step >= 4:
        return (shrink(gray, step) if step > 1 else to_unit(gray)), step, step
    # a long thin image: shrink each side on its own, keeping at least 4 pixels across
    sh, sw = (max(min(h, 4), h // step), max(min(w, 4), w // step))
    return resize(gray, sw, sh), w / sw, h / sh


def departure(small: np.ndarray, backdrop: np.ndarray, light_backdrop: bool) -> np.ndarray:
    """How far each pixel departs from the backdrop towards the object (bright on black)."""
    return (backdrop - small) if light_backdrop else (small - backdrop)


@dataclass(frozen=True)
class Standout:
    """What stands out from the backdrop (see ``stand_out``), on ``locate``'s small copy."""
    coef: np.ndarray  # the backdrop surface (see fit_background)
    signal: np.ndarray  # the departure towards the object, bright on black; 0 on the bands
    light_backdrop: bool  # a dark object on a light backdrop
    threshold: float  # the object's pixels are above it
    residual: np.ndarray  # the departure from the surface of the pixels off the bands (flat)

    @functools.cached_property
    def texture(self) -> float:
        """The backdrop's robust spread around the surface (0-1), of what is left below half the
        threshold (only the last pass's is needed)."""
        return spread(self.residual[np.abs(self.residual) <= self.threshold / 2])


def stand_out(small: np.ndarray, bands: np.ndarray) -> Standout | None:
    """What stands out from the backdrop surface fitted to ``small`` (to its border, or with
    ``bands`` to the ring inside them), the pixels of ``bands`` left out: the polarity (the
    object is the strongest departure, darker or lighter), a threshold relative to the
    strongest response, and the texture of what is left below half of it. None when nothing
    stands out."""
    coef = fit_background(small, exclude=bands if bands.any() else None)
    backdrop = plane(coef, small.shape)
    diff = small - backdrop
    rest = diff[~bands]
    low, high = quantiles(rest, 0.01, 0.99)
    contrast = float(max(-low, high))
    if contrast < MIN_CONTRAST:
        return None
    light_backdrop = -low > high
    signal = np.where(bands, np.float32(0), departure(small, backdrop, light_backdrop))
    threshold = max(otsu(signal[~bands]), contrast * 0.25, MIN_CONTRAST / 2)
    return Standout(coef, signal, light_backdrop, threshold, rest)


def locate(gray: np.ndarray) -> Located | None:
    """Find the object in a 2-D grayscale frame; None when nothing stands out."""
    h, w = gray.shape
    if min(h, w) < 4:  # a sliver: no room for an object
        return None
    # 1. analyse a small copy
    small, sx, sy = small_copy(gray)
    # 2. the backdrop surface, and what stands out from it (dark-on-light becomes bright-on-black),
    #    black fill along the edges left out
    black = fill(small)
    out = stand_out(small, black)
    if out is None:
        return None
    # 3. bands along the sides (a table edge, a keyboard) and arms reaching in (a sleeve) are not
    #    the object: the surface is fitted again without them, and the polarity and threshold
    #    measured without them (a dark band would set them, and a faint garment fall below)
    mask = out.signal > out.threshold
    bands = straight_bands(mask)
    bands |= arms(mask & ~bands)
    border = border_geometry(*small.shape)[0]
    if bands.any() and share(bands[border]) <= 0.5:  # half the border left to fit the surface to
        out = stand_out(small, bands | black)
        if out is None:
            return None
    # 4. the object's box: its mask starts above the backdrop's texture
    box, sound = object_box(out.signal, max(out.threshold, TEXTURE_THRESHOLD * out.texture))
    if box is None:
        return None
    # 5. the box in full resolution, with a margin, clipped to the frame
    x, y, bw, bh = box
    m = MARGIN * max(bw, bh)
    x0, y0 = max(0, int((x - m) * sx)), max(0, int((y - m) * sy))
    x1, y1 = min(w, int(np.ceil((x + bw + m) * sx))), min(h, int(np.ceil((y + bh + m) * sy)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return Located((x0, y0, x1, y1), out.coef, out.light_backdrop, sound, out.texture,
                   out.threshold / max(out.texture, 1e-3))
