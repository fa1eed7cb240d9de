"""Turn any image into what the model takes, as its contract says: H x W x C in [0, 1].

An array already of the model's height and width is only rescaled (and converted to gray
or RGB). Anything else (gray, BGR, BGRA, any size, a camera frame) is prepared by the
contract's preprocessing kind:

- ``resize``: the whole image (or the roi) resized to the input, in gray or RGB.
- ``object``: find the object against the backdrop (``locate``: grayscale, else the colour
  channel the object stands out in most, for an object that differs only in colour; a backdrop
  surface fitted to the border, a plane plus the lens's vignetting, robust to a table edge
  or a keyboard along one side; polarity; a threshold; bands along a side, square-on or at
  an angle, arms reaching in from a side to the garment, and black fill at the edges (a
  warped picture's corners) left out and the surface fitted again without them; the largest
  blob), then frame it as the training data were.
  One channel: the object's signal, bright on black (a dark garment on a light backdrop
  becomes bright, as Fashion-MNIST negated its photos), the backdrop's texture below a floor
  dropped, stood upright when it is mirror-symmetric at a tilt (``upright``), longest side
  filling the input, centred, contrast stretched. Three channels: the object's box widened
  to the input's aspect ratio, in RGB. ``found`` is False when nothing stands out (one
  channel is then black, three the whole picture), and also
  when the segmentation is not sound (the object runs off the frame, or clutter at the edge
  outweighs it): then the image is a best guess, and a user interface should say so.

Colour input images are in OpenCV's order (BGR, BGRA); colour model inputs are RGB.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from runtime.contract import Contract
from runtime.roi import Roi

try:  # OpenCV is optional: fast colour conversion and resizing when present
    import cv2
except ImportError:  # pragma: no cover - exercised in the base-install test
    cv2 = None

WORK_SIZE = 96  # frames are analysed with their longest side about this long: fast, enough
MIN_CONTRAST = 0.08  # object-vs-background difference (0-1) below which nothing is there
# Box margin, as a fraction of its longest side. The dataset's longest side touches the
# edge; on the train-derived camera set a 6% margin cost 3 pp (python -m train.camera_eval).
MARGIN = 0.0
# A table edge, a keyboard or a cuff along a side of the frame stands out like a garment. Seen at
# an angle (a camera not square-on) it is a band whose inner edge slants, but perspective keeps
# that edge straight; a garment's outline is not straight.
BAND_COVER = 0.6  # a band runs along at least this share of its side
MAX_BAND = 0.35  # ...reaching at most this share of the frame in (a keyboard's edge: 10-25%)
BAND_GAP = 2  # ...beginning within this many pixels of the side (of locate's small copy)
BAND_FIT = 1.5  # ...and ending within this many pixels of a straight line along the side
MERGE_ROUNDS = 4  # pieces merged into the garment's box: enough for a sandal's straps
# A sleeve or an arm reaching in from a side (a hand holding the garment up) joins the garment's
# mask where it touches it, and the box takes both. Seen from its side, such a part is about as
# wide as where it meets the side, until the garment begins and the mask widens.
REACH = 0.5  # an arm reaches at most half the frame in before the garment (the simulator's: 15-35%)
NECK = 1.5  # ...and the garment begins where the part grows wider than this multiple of its width at the side
# A picture warped or rotated onto the frame leaves black fill in its corners and along its sides
# (OpenCV's default border): no backdrop, and as dark as no garment.
FILL_LEVEL = 0.04  # darker than this (0-1) and touching the frame's edge: fill
FILL_DEPTH = 0.15  # ...reaching at most this share of the frame in (deeper: a black backdrop, as the dataset's)
RIM = 2  # pixels (of the small copy) between the fill or a band and the ring the backdrop is fitted to
# Signal below this many robust standard deviations of the backdrop's texture is dropped; on
# train-derived frames 2 beat 0, 1 and 4 (wood 82 -> 86%, lamps 84.5 -> 86%, plain unchanged).
TEXTURE_FLOOR = 2.0
# The object's mask starts at least this many robust standard deviations of the texture above
# the backdrop: a faint garment's threshold otherwise sits among a blotchy desk's peaks, which
# join its box. python -m train.camera_eval --split train --n 600 --compare: desk 90.7 -> 91.8%,
# wood 91.2 -> 92.7, fabric 85.0 -> 87.0, cluttered 83.2 -> 83.8, plain and hard unchanged;
# 5 beat 3, 4, 6 and 8 on desk-like frames of validation images.
TEXTURE_THRESHOLD = 5.0
# Fashion-MNIST's garments stand upright; a camera sees them tilted (15 degrees either way in the
# simulator's sets). Most garments are mirror-symmetric, so the turn that makes the signal most
# symmetric stands them up; shoes, seen from the side, are not, and stay as they are.
# python -m train.camera_eval --split test --n 1000 --compare <before>: standard 92.4 -> 93.0%,
# hard 91.1 -> 92.0, desk 87.6 -> 88.4, lamps 89.8 -> 91.5, cluttered 82.6 -> 83.2, wood
# 91.3 -> 90.8; 1.2-1.3x the time. Gates of 0.85 and 0.95 and a 3-degree search did alike.
MAX_TILT = 18.0  # degrees searched either way: the simulator's 15 and a little more
SYMMETRY = 0.9  # mirror correlation at the best turn above which an object counts as symmetric
MIN_TILT = 2.0  # degrees: a smaller tilt is left as it is (the model takes it; a turn blurs a little)
TILT_SIZE = 32  # pixels: the tilt is judged on a copy about this long (a 28x28 input's crop is 56)
ELONGATION = 0.3  # (0: round, 1: a line) below it the principal axes are a few degrees off (searched instead)
KEEP = 0.1  # after the turn, the object's extent: where its signal is above this share of the peak
SUPPORTED_DTYPES = (np.uint8, np.uint16, np.float16, np.float32, np.float64)
CV_DTYPES = (np.uint8, np.uint16, np.float32)  # what cv2.cvtColor and cv2.resize take


@dataclass(frozen=True)
class Prepared:
    """A model-ready (H, W, C) float32 image in [0, 1] and whether an object was found."""
    image: np.ndarray
    found: bool
    box: tuple[int, int, int, int] | None  # x, y, w, h in the input image


@dataclass(frozen=True)
class Located:
    """Where ``locate`` found the object, and the backdrop it stands out from."""
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in full-resolution pixels
    coef: np.ndarray  # the backdrop surface (see fit_background)
    light_backdrop: bool  # a dark object on a light backdrop
    sound: bool = True  # the object is whole and clear of clutter (see object_box); else a best guess
    texture: float = 0.0  # the backdrop's robust spread around the backdrop map (0-1)
    clarity: float = 0.0  # how far the object stands out: its threshold over the backdrop's texture


def validate(image: object) -> np.ndarray:
    """Check an input image; raise ValueError that says what was expected."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy array image, got {type(image).__name__}")
    image = np.asarray(image)  # a subclass (np.matrix, a masked array) as the plain array it holds
    if image.dtype.type not in SUPPORTED_DTYPES:
        raise ValueError(f"unsupported dtype {image.dtype}; expected uint8 (0-255), uint16, "
                         "or float (0-1)")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected 1 (gray), 3 (BGR) or 4 (BGRA) channels, got shape {image.shape}")
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an image of shape (H, W) or (H, W, C), got shape {image.shape}")
    if image.size == 0 or min(image.shape[:2]) < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    if not image.dtype.isnative:  # big-endian data (e.g. read from a file): same values, native order
        image = image.astype(image.dtype.newbyteorder("="))
    if image.dtype.kind == "f":
        if not np.isfinite(image).all():
            raise ValueError("image contains NaN or infinite values")
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(f"float images must be in [0, 1], got values in [{low!r}, {high!r}]; "
                             "pass uint8 for 0-255 data")
    return image


def to_gray(image: np.ndarray) -> np.ndarray:
    """2-D grayscale in the input's own dtype (converting a whole frame to float is slow)."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[..., 0]
    if cv2 is not None and image.dtype in CV_DTYPES:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    gray = image[..., :3].astype(np.float32) @ np.float32([0.114, 0.587, 0.299])  # BGR weights
    return gray.astype(image.dtype) if image.dtype.kind == "u" else gray


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, channels): gray, or RGB from gray, BGR or BGRA (alpha dropped)."""
    if channels == 1:
        return to_gray(image)[..., None]
    if image.ndim == 2 or image.shape[2] == 1:
        return np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
    return image[..., 2::-1]


def to_unit(gray: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] from uint8 (0-255), uint16 (0-65535) or float (0-1) pixels. A division,
    correctly rounded on every CPU, so a uint8 level becomes what the contract's lookup table
    (``Contract.pixel_values``) makes of it, to the bit."""
    if gray.dtype == np.uint8:
        return gray.astype(np.float32) / np.float32(255)
    if gray.dtype == np.uint16:
        return gray.astype(np.float32) / np.float32(65535)
    return gray.astype(np.float32, copy=False)


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average downscale (or nearest upscale), any channels, as float32 in [0, 1]."""
    if cv2 is not None and image.dtype in CV_DTYPES:
        small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        return to_unit(small.reshape(height, width, *image.shape[2:]))  # OpenCV drops a last axis of 1
    image = to_unit(image)
    h, w = image.shape[:2]
    if height <= h and width <= w:  # box filter: sum over row/column bands
        ys = np.linspace(0, h, height + 1).astype(int)
        xs = np.linspace(0, w, width + 1).astype(int)
        sums = np.add.reduceat(np.add.reduceat(image, ys[:-1], axis=0), xs[:-1], axis=1)
        area = np.outer(np.diff(ys), np.diff(xs)).reshape(height, width, *[1] * (image.ndim - 2))
        return (sums / area).astype(np.float32)
    rows = np.minimum((np.arange(height) + 0.5) * h / height, h - 1).astype(int)
    cols = np.minimum((np.arange(width) + 0.5) * w / width, w - 1).astype(int)
    return image[rows][:, cols]


def resize_whole(image: np.ndarray, contract: Contract) -> np.ndarray:
    """The ``resize`` kind: the whole image to the input's size, in gray or RGB."""
    if contract.channels == 1:
        image = to_gray(image)
    return to_channels(resize(image, contract.width, contract.height), contract.channels)


# The border in eight segments: the top's left and right halves, the bottom's, the left side's
# upper and lower halves, the right side's. A band along a side (a table edge, a keyboard)
# covers that side and the adjacent halves of the two sides it meets, so each subset leaves
# out one side with those halves; the first keeps all.
SEGMENTS = ("top-left", "top-right", "bottom-left", "bottom-right", "left-upper", "left-lower",
            "right-upper", "right-lower")
SUBSETS = np.array([[1, 1, 1, 1, 1, 1, 1, 1],
                    [0, 0, 1, 1, 0, 1, 0, 1],   # without the top
                    [1, 1, 0, 0, 1, 0, 1, 0],   # without the bottom
                    [0, 1, 0, 1, 0, 0, 1, 1],   # without the left
                    [1, 0, 1, 0, 1, 1, 0, 0]],  # without the right
                   np.float32)


def radius2(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared distance from the frame's centre (x, y in [0, 1)), 1 in the corners: a lens's
    vignetting darkens the frame about in proportion."""
    return ((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.5


def surface_design(where: np.ndarray) -> np.ndarray:
    """The surface's design matrix (1, x, y, radius2) at the pixels of the mask ``where``, with
    x and y normalised to [0, 1) (see fit_background)."""
    h, w = where.shape
    yy, xx = np.nonzero(where)
    return np.stack([np.ones(len(xx)), xx / w, yy / h, radius2(xx / w, yy / h)], 1).astype(np.float32)


@functools.lru_cache(maxsize=8)
def border_geometry(h: int, w: int):
    """For an h x w image: border mask, surface design matrix (1, x, y, radius2), segment
    membership, and the inverse normal matrices of the five SUBSETS (frames keep their size:
    cached).

    Only called on ``locate``'s small copy (at most about WORK_SIZE pixels a side), so an
    entry stays under a megabyte and the cache under ten."""
    band = max(1, min(h, w) // 24)
    sides = np.zeros((len(SEGMENTS), h, w), bool)
    left, top = w // 2, h // 2
    sides[0, :band, :left], sides[1, :band, left:] = True, True
    sides[2, -band:, :left], sides[3, -band:, left:] = True, True
    sides[4, :top, :band], sides[5, top:, :band] = True, True
    sides[6, :top, -band:], sides[7, top:, -band:] = True, True
    border = sides.any(0)
    design = surface_design(border)
    side_of = sides[:, border].astype(np.float32)  # (8, n): which segment each border pixel is on
    gram = (side_of[:, None, :] * design.T[None]) @ design  # (8, 4, 4)
    inverse = np.linalg.inv(np.einsum("ks,sij->kij", SUBSETS, gram) + 1e-6 * np.eye(design.shape[1]))
    return border, design, side_of, inverse.astype(np.float32)


def least_squares(design: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.linalg.solve(design.T @ design + 1e-6 * np.eye(design.shape[1]), design.T @ values)


def fit_background(small: np.ndarray, tolerance: float = 0.05, exclude: np.ndarray | None = None) -> np.ndarray:
    """Coefficients (a, b, c, d) of the backdrop surface a + b*x + c*y + d*radius2(x, y), x and y
    in [0, 1): an even lighting gradient and the lens's vignetting, d <= 0 (a plane alone reads a
    vignetted frame's bright centre as a bright object: desk frames 63% -> 71% with it).

    Fitted to the frame's border, which is mostly backdrop. A table edge or a keyboard can
    cover one side and the ends of the two sides it meets, so the surface is fitted to the
    whole border and to each subset without one side and those ends (SUBSETS: the keyboard
    set 65% -> 81% over whole sides), and to no slope at all (a plain backdrop at the border's
    median level), and the fit that explains most border pixels (within ``tolerance``) wins,
    refitted on those. When the bands and fill along the sides are known (``exclude``: a mask
    of ``small``), the ring just inside the rest of the picture is fitted instead (``ring``).
    Normalised coordinates make it independent of the resolution.
    """
    border, design, side_of, inverse = border_geometry(*small.shape)
    inside = None if exclude is None else ring(exclude)
    if inside is None:
        values = small[border]
        moment = side_of @ (design * values[:, None])  # (8, 4)
        candidates = (inverse @ (SUBSETS @ moment)[..., None])[..., 0]  # (5, 4)
    else:
        design, values = surface_design(inside), small[inside]
        candidates = least_squares(design, values)[None]
    # and a plain backdrop at the median level: the fit when the object covers much of the
    # border (an image filled by the garment, as a product photo or the dataset's own)
    (level,) = quantiles(values, 0.5)
    candidates = np.concatenate([candidates, np.float32([[level, 0, 0, 0]])])
    inliers = np.abs(values[:, None] - design @ candidates.T) <= tolerance  # (n, 6 or 2)
    best = inliers[:, np.argmax(np.count_nonzero(inliers, axis=0))]
    coef = candidates[0]
    if np.count_nonzero(best) >= 3:
        coef = least_squares(design[best], values[best])
        if coef[3] > 0:  # corners brighter than the centre: no lens does that (folds of cloth do)
            coef = np.append(least_squares(design[best, :3], values[best]), 0.0)
    return coef.astype(np.float32)


def ring(exclude: np.ndarray, width: int = 3) -> np.ndarray | None:
    """The pixels RIM to RIM + ``width`` inside the picture that ``exclude`` leaves (the frame's
    edge is an edge of it too): the backdrop next to a band or fill, clear of their blurred
    rim. None without OpenCV or when there are too few."""
    if cv2 is None:
        return None
    def erode(image: np.ndarray, iterations: int) -> np.ndarray:  # beyond the frame's edge: not the picture
        return cv2.erode(image, None, iterations=iterations, borderType=cv2.BORDER_CONSTANT, borderValue=0)

    picture = erode((~exclude).astype(np.uint8), RIM)
    inside = (picture & ~erode(picture, width)).astype(bool)
    return inside if np.count_nonzero(inside) >= 20 else None


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


def plane(coef: np.ndarray, shape: tuple[int, int], box: tuple[int, int, int, int] | None = None,
          step: int = 1) -> np.ndarray:
    """The backdrop surface (see fit_background) over ``box`` (x0, y0, x1, y1) of an image of
    ``shape``, sampled at the centres of ``step`` x ``step`` blocks."""
    h, w = shape
    x0, y0, x1, y1 = box or (0, 0, w, h)
    xs = (np.arange(x0, x1 - step + 1, step, dtype=np.float32) + (step - 1) / 2) / w
    ys = (np.arange(y0, y1 - step + 1, step, dtype=np.float32) + (step - 1) / 2) / h
    return coef[0] + coef[1] * xs[None, :] + coef[2] * ys[:, None] + coef[3] * radius2(xs[None, :], ys[:, None])


def shrink(image: np.ndarray, step: int) -> np.ndarray:
    """Average ``step`` x ``step`` blocks (an exact integer ratio: OpenCV's fast path)."""
    h, w = (image.shape[0] // step) * step, (image.shape[1] // step) * step
    return resize(image[:h, :w], w // step, h // step)


def quantiles(values: np.ndarray, *fractions: float) -> list[float]:
    """Order statistics by one partial sort (np.percentile costs several times more)."""
    flat = values.ravel()
    ks = [min(len(flat) - 1, int(f * len(flat))) for f in fractions]
    part = np.partition(flat, ks)
    return [float(part[k]) for k in ks]


def median(values: np.ndarray) -> np.float64:
    """np.median's value (the mean of the two middle values of an even count) by one partial
    sort (np.median costs several times more on a short array). A NumPy float64, as
    np.median's: a Python float would leave ``straight_bands``' line in float32 (NEP 50)."""
    middle = [(values.size - 1) // 2, values.size // 2]
    low, high = np.partition(values.ravel(), middle)[middle]
    return (np.float64(low) + np.float64(high)) / 2


def otsu(values: np.ndarray, bins: int = 64) -> float:
    """Otsu's threshold: the cut that best splits ``values`` into two classes (object and
    surface texture), so a blotchy desk does not leak into the object."""
    low, high = float(values.min()), float(values.max())
    width = (high - low) / bins or 1.0
    index = np.minimum(((values - low) / width).astype(np.intp), bins - 1)
    hist = np.bincount(index.ravel(), minlength=bins)
    centres = low + width * (np.arange(bins) + 0.5)
    weight = np.cumsum(hist)
    mean = np.cumsum(hist * centres)
    total, total_mean = weight[-1], mean[-1]
    apart = weight * (total - weight)  # 0 where a class is empty: no cut there
    between = np.divide((total_mean * weight - mean * total) ** 2, apart, out=np.full(bins, -1.0), where=apart > 0)
    return float(centres[np.argmax(between[:-1])])


def share(mask: np.ndarray) -> float:
    """The share of ``mask`` that is True (as its mean, at a fraction of the cost)."""
    return np.count_nonzero(mask) / mask.size


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


def frame_like_dataset(signal: np.ndarray, height: int, width: int) -> np.ndarray:
    """Longest side filling the input, centred on black, contrast to the full range."""
    h, w = signal.shape
    scale = min(height / h, width / w)
    nh, nw = max(1, min(height, round(h * scale))), max(1, min(width, round(w * scale)))
    canvas = np.zeros((height, width), np.float32)
    top, left = (height - nh) // 2, (width - nw) // 2
    canvas[top:top + nh, left:left + nw] = resize(signal, nw, nh)
    (peak,) = quantiles(canvas, 0.995)
    return np.clip(canvas / peak, 0.0, 1.0) if peak > 0 else canvas


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
    """How far each pixel departs from the backdrop towards the object (bright on black).

    (Measured on the train-derived desk frames and not kept: a ratio to the backdrop's
    brightness, and a local backdrop map around the object; neither beat this difference.)"""
    return (backdrop - small) if light_backdrop else (small - backdrop)


def spread(values: np.ndarray) -> float:
    """A robust standard deviation: 1.4826 x the median absolute deviation (0 when empty)."""
    if values.size == 0:
        return 0.0
    (median,) = quantiles(values, 0.5)
    (mad,) = quantiles(np.abs(values - median), 0.5)
    return 1.4826 * mad


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


def object_signal(gray: np.ndarray, found: Located, height: int, width: int) -> np.ndarray:
    """One channel: the object's departure from the backdrop, framed like Fashion-MNIST."""
    x0, y0, x1, y1 = found.box
    # the signal inside the box, at about twice the output resolution
    k = max(1, min(max(x1 - x0, y1 - y0) // (2 * max(height, width)), min(x1 - x0, y1 - y0)))
    crop = shrink(gray[y0:y1, x0:x1], k)
    patch = plane(found.coef, gray.shape, (x0, y0, x0 + crop.shape[1] * k, y0 + crop.shape[0] * k), k)
    # the backdrop's texture (wood grain, weave, blotches) below a floor goes: Fashion-MNIST's
    # backgrounds are black
    signal = np.clip(departure(crop, patch, found.light_backdrop) - TEXTURE_FLOOR * found.texture, 0.0, None)
    return frame_like_dataset(upright(signal), height, width)[..., None]


def object_crop(image: np.ndarray, found: Located, contract: Contract) -> np.ndarray:
    """Three channels: the object's box widened to the input's aspect ratio, in RGB."""
    x0, y0, x1, y1 = found.box
    h, w = image.shape[:2]
    # grow the short side around the box's centre, kept inside the image
    bw = min(w, max(x1 - x0, round((y1 - y0) * contract.width / contract.height)))
    bh = min(h, max(y1 - y0, round((x1 - x0) * contract.height / contract.width)))
    left = min(max(0, (x0 + x1 - bw) // 2), w - bw)
    top = min(max(0, (y0 + y1 - bh) // 2), h - bh)
    return resize_whole(image[top:top + bh, left:left + bw], contract)


def find_object(image: np.ndarray, contract: Contract) -> Prepared:
    """The ``object`` kind: locate the object and frame it as the training data were."""
    gray = to_gray(image)
    found = locate(gray)
    if found is None and image.ndim == 3 and image.shape[2] >= 3:  # an object that differs from its
        # backdrop in colour, not in brightness (green on red): the colour channel it stands out in most
        channels = [np.ascontiguousarray(image[..., c]) for c in range(3)]
        views = [(f, channel) for f, channel in zip(map(locate, channels), channels) if f is not None]
        if views:
            found, gray = max(views, key=lambda view: (view[0].sound, view[0].clarity))
    if found is None:  # nothing stands out: in colour the whole picture (the crops' domain, wider), in gray
        # black (the object signal is a departure from a backdrop; there is none)
        blank = resize_whole(image, contract) if contract.channels == 3 else np.zeros(contract.image_shape, np.float32)
        return Prepared(blank, False, None)
    if contract.channels == 1:
        framed = object_signal(gray, found, contract.height, contract.width)
    else:
        framed = object_crop(image, found, contract)
    x0, y0, x1, y1 = found.box
    return Prepared(framed, found.sound, (x0, y0, x1 - x0, y1 - y0))


def prepare(image: np.ndarray, contract: Contract, roi: Roi | tuple | None = None) -> Prepared:
    """Validate ``image`` and return the model-ready (H, W, C) float image.

    ``roi`` (x, y, w, h) limits where to look; the returned box is in ``image`` coordinates.
    """
    image = validate(image)
    if roi is not None:
        roi = Roi.of(roi).check_inside(image.shape[1], image.shape[0])
        image = image[roi.y:roi.y + roi.h, roi.x:roi.x + roi.w]
    height, width = image.shape[:2]
    if (height, width) == (contract.height, contract.width):
        # already shaped like the training data: only rescaled
        prepared = Prepared(to_unit(to_channels(image, contract.channels)), True, (0, 0, width, height))
    elif contract.preprocessing == "resize":
        prepared = Prepared(resize_whole(image, contract), True, (0, 0, width, height))
    else:
        prepared = find_object(image, contract)
    if roi is None or prepared.box is None:
        return prepared
    x, y, w, h = prepared.box
    return Prepared(prepared.image, prepared.found, (x + roi.x, y + roi.y, w, h))
