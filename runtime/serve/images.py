"""Decode uploaded image bytes into the pixels the model's contract asks for, refusing bombs before decoding.

One-channel models get a 2-D gray array (a JPEG's luma alone, the fastest path); three-channel
models get a contiguous (height, width, 3) array in OpenCV's BGR order, as Predictor takes colour.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
# A JPEG larger than this is decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself (cheap,
# and the object still spans far more pixels than a small model's input).
JPEG_TARGET = (1024, 768)
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that turn the picture by 90 degrees


class BadImage(ValueError):
    """An upload that is not a usable image; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # uint8: (height, width) gray, or (height, width, 3) BGR
    scale: float  # decoded pixels per pixel of the uploaded image (JPEG draft mode < 1)
    size: tuple[int, int]  # width, height of the uploaded image, as the user sees it (EXIF orientation)


def decode(data: bytes, max_pixels: int, channels: int = 1) -> Decoded:
    """PNG/JPEG/BMP/WebP bytes -> gray (``channels`` 1) or BGR (3) uint8; BadImage (4xx) for anything else."""
    if not data:
        raise BadImage(400, "empty body: send the image file's bytes")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except UnidentifiedImageError:
        raise BadImage(415, f"not a {', '.join(FORMATS)} image") from None
    except Image.DecompressionBombError as e:  # Pillow's own, far higher limit
        raise BadImage(413, f"image over the limit of {max_pixels:,} pixels ({e})") from None
    except Exception as e:  # a header the plugin cannot parse
        raise BadImage(400, f"cannot read the image header: {e}") from None
    width, height = image.size
    if image.format == "JPEG":
        # gray: decode luma only; both: downscaled in the DCT when large
        image.draft("L" if channels == 1 else "RGB", JPEG_TARGET)
    if image.size[0] * image.size[1] > max_pixels:  # before a single pixel is decoded
        raise BadImage(413, f"image is {width}x{height} pixels; the limit is {max_pixels:,} pixels")
    try:
        if image.format in ("JPEG", "WEBP"):
            if image.getexif().get(ExifTags.Base.Orientation) in SWAPPING_ORIENTATIONS:
                width, height = height, width
            image = ImageOps.exif_transpose(image)  # phone photos: the orientation the user saw
        pixels = _to_gray(image) if channels == 1 else _to_bgr(image)
    except Exception as e:  # truncated or corrupt pixel data
        raise BadImage(400, f"cannot decode the image: {e}") from None
    return Decoded(pixels, max(pixels.shape[:2]) / max(width, height), (width, height))  # draft scales both sides alike


def _to_gray(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I;16"):  # 16-bit PNG: Pillow's convert("L") would clip, not scale
        return (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image)


def _to_bgr(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I;16"):  # 16-bit gray: scaled as on the gray path, then three equal channels
        return np.repeat(_to_gray(image)[..., None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")  # gray, palette, alpha (dropped), CMYK
    return np.ascontiguousarray(np.asarray(image)[..., ::-1])
