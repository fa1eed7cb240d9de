"""Framing: the model-ready image, framed as the training data were (``prepare``).

An array of the model's height and width is only rescaled; the ``resize`` kind resizes the whole
image; the ``object`` kind locates the object (``locate``) and frames it (``find_object``): one
channel its signal, bright on black, upright, longest side filling the input, centred, contrast
stretched, as Fashion-MNIST's; three channels its box widened to the input's aspect ratio, in RGB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.contract import Contract
from runtime.roi import Roi

from .backdrop import plane
from .locating import Located, departure, locate
from .pixels import resize, resize_whole, shrink, to_channels, to_gray, to_unit, validate
from .stats import quantiles
from .tilt import upright

# Signal below this many robust standard deviations of the backdrop's texture is dropped: the
# texture (wood grain, weave), not the garment (2 did best on camera frames, of 0 to 4).
TEXTURE_FLOOR = 2.0


@dataclass(frozen=True)
class Prepared:
    """A model-ready (H, W, C) float32 image in [0, 1] and whether an object was found."""
    image: np.ndarray
    found: bool
    box: tuple[int, int, int, int] | None  # x, y, w, h in the input image


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
