"""Decode uploaded image bytes into a grayscale array, refusing bombs before decoding."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
# A JPEG larger than this is decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself (cheap,
# and the object still spans far more than the 28 pixels the model sees).
JPEG_TARGET = (1024, 768)


class BadImage(ValueError):
    """An upload that is not a usable image; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Decoded:
    gray: np.ndarray  # uint8, (height, width)
    scale: float  # decoded pixels per pixel of the uploaded image (JPEG draft mode < 1)


def decode(data: bytes, max_pixels: int) -> Decoded:
    """PNG/JPEG/BMP/WebP bytes -> grayscale uint8; BadImage (4xx) for anything else."""
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
        image.draft("L", JPEG_TARGET)  # decode luma only, downscaled in the DCT when large
    if image.size[0] * image.size[1] > max_pixels:  # before a single pixel is decoded
        raise BadImage(413, f"image is {width}x{height} pixels; the limit is {max_pixels:,} pixels")
    try:
        if image.format in ("JPEG", "WEBP"):
            image = ImageOps.exif_transpose(image)  # phone photos: the orientation the user saw
        gray = _to_gray(image)
    except Exception as e:  # truncated or corrupt pixel data
        raise BadImage(400, f"cannot decode the image: {e}") from None
    return Decoded(gray, max(gray.shape) / max(width, height))  # draft scales both sides alike


def _to_gray(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I;16"):  # 16-bit PNG: Pillow's convert("L") would clip, not scale
        return (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image)
