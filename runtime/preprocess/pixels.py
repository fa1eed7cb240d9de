"""Pixels: check an input image, convert it (gray, channels, [0, 1]) and resize it.

Input images are NumPy arrays: uint8 (0-255), uint16 (0-65535) or float (0-1), gray (H, W) or
(H, W, 1), or colour in OpenCV's order (BGR, BGRA). OpenCV, when installed, converts and resizes
(fast); NumPy stands in without it. ``cv2`` here is OpenCV or None: the other steps take it from
here.
"""

from __future__ import annotations

import numpy as np

from runtime.contract import Contract

try:  # OpenCV is optional: fast colour conversion and resizing when present
    import cv2
except ImportError:  # pragma: no cover - exercised in the base-install test
    cv2 = None

SUPPORTED_DTYPES = (np.uint8, np.uint16, np.float16, np.float32, np.float64)
CV_DTYPES = (np.uint8, np.uint16, np.float32)  # what cv2.cvtColor and cv2.resize take


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


GRAY_WEIGHTS = (3735, 19235, 9798)  # B, G, R over 2**15: cv2.COLOR_BGR2GRAY's for uint8 (tests/test_images.py)


def to_gray(image: np.ndarray) -> np.ndarray:
    """2-D grayscale in the input's own dtype (converting a whole frame to float is slow)."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[..., 0]
    if cv2 is not None and image.dtype in CV_DTYPES:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    if image.dtype == np.uint8:  # OpenCV's own fixed-point rule (BT.601 in 15 bits): the same gray without it
        b, g, r = (image[..., i].astype(np.uint32) for i in range(3))
        return ((b * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + r * GRAY_WEIGHTS[2] + (1 << 14)) >> 15).astype(np.uint8)
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


def shrink(image: np.ndarray, step: int) -> np.ndarray:
    """Average ``step`` x ``step`` blocks (an exact integer ratio: OpenCV's fast path)."""
    h, w = (image.shape[0] // step) * step, (image.shape[1] // step) * step
    return resize(image[:h, :w], w // step, h // step)
