"""Read image files and uploads into the pixels the runtime takes: one reader for every entry point.

``python -m runtime``, the HTTP API, collect, the camera demo's folder source and the training
folder loader all call ``decode`` (bytes) or ``load`` (a file), so the same file gives the same
pixels, hence the same model input, wherever it is read. One rule for every kind of file:

- PNG, JPEG (MPO: a phone's JPEG with a second picture), BMP and WebP are read; anything else is
  refused (415) by its content, whatever its name says.
- gray files (gray, bilevel, 16-bit, 32-bit and float gray) stay 2-D gray; everything else
  (colour, palette, CMYK, ...) becomes BGR, OpenCV's order, as ``Predictor`` takes colour. A model's
  own gray is made later, by ``runtime.preprocess`` (``channels=1`` here asks for the same).
- 16-bit images keep their high byte (as Pillow reads 16-bit colour); float gray is scaled to 0-255.
- transparent images (RGBA, LA, PA, a palette or gray/RGB with a transparent colour) are
  composited on white, as a browser shows them on a white page.
- the EXIF orientation (JPEG, MPO, WebP, PNG) is applied: the picture as the user sees it.
- decoded images larger than the working size (``WORK_SIDE``, about 1024 px) are shrunk at once
  (libjpeg's DCT scaling for JPEG, ``Image.reduce`` for the others), so nothing downstream sees
  a large array.

Everything is judged from the header, before a single pixel is decoded:

- the size as declared (before JPEG's draft mode): at most ``max_pixels`` (``MAX_PIXELS``);
- the shape: beyond the working size, neither side may be more than 20 times the other (a 15 KB
  PNG of 4 x 4,000,000 pixels is within 16 MP, but nothing could be made of it);
- what the format's decoder costs (measured: ``runtime.image_costs``): compressed BMPs are decoded by
  Pillow in pure Python, WebP through libwebp's animation decoder, progressive (and multi-scan) JPEGs
  hold every DCT coefficient of the full image whatever the draft size.

Pillow decodes every file but plain PNGs (8-bit gray or RGB, opaque, up to the working size: most
small images), which OpenCV decodes when installed, several times faster, to the same pixels.

Files are read by ``read_file``: regular files only (never a FIFO or a device: reading one blocks
or never ends), at most ``MAX_BYTES``, read no further than that.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from runtime.image_costs import JPEG_FORMATS, PNG_SIGNATURE, BadImage, check_cost, check_structure

try:  # decodes plain PNGs (``plain_png``) several times faster than Pillow (the same pixels: PNG is lossless),
    import cv2  # and swaps RGB to BGR ten times faster than numpy
except ImportError:  # the base install: Pillow decodes them
    cv2 = None

MAX_PIXELS = 16_000_000  # of an image, as its header declares it: a 12 MP phone photo passes
MAX_BYTES = 64 << 20  # of a file: a phone photo takes a few MB, a 16-bit scan tens; a bigger one is never read
FORMATS = ("PNG", "JPEG", "BMP", "WEBP")  # what Image.open may try; see JPEG_FORMATS for MPO
# Pillow opens a JPEG with an MP extension (a phone's MPO) through the JPEG plugin as format "MPO"
# ("MPO" cannot be given to Image.open's formats): both are decoded the same way (JPEG_FORMATS).
ACCEPTED = (*FORMATS, "MPO")
WORK_SIDE = 1024  # decoded images are shrunk to a longest side between this and twice this
# A JPEG larger than this is decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself (cheap,
# and the object still spans far more pixels than a small model's input).
JPEG_TARGET = (1024, 768)
MAX_ASPECT = 20  # longest side / shortest side, for images longer than WORK_SIDE
PLAIN_PNG = ((8, 0), (8, 2))  # IHDR's bit depth and colour type: 8-bit gray, 8-bit RGB
PLAIN_CHUNKS = (b"IHDR", b"pHYs", b"IDAT", b"IEND")  # what OpenCV's and Pillow's PNGs of plain pixels hold
EXIF_FORMATS = (*JPEG_FORMATS, "WEBP", "PNG")
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that turn the picture by 90 degrees
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}  # as ImageOps.exif_transpose, applied to the shrunk image


class OverBudget(BadImage):
    """An image larger than what its batch has left of its pixel budget (413)."""

    def __init__(self, message: str):
        super().__init__(413, message)


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # uint8: (height, width) gray, or (height, width, 3) BGR
    scale: float  # decoded pixels per pixel of the image (< 1 when shrunk)
    size: tuple[int, int]  # width, height of the image, as the user sees it (EXIF orientation)
    lossy: bool = False  # a JPEG or a lossy WebP: stored again, a lossless format would inflate it

    @property
    def declared_pixels(self) -> int:
        return self.size[0] * self.size[1]


def load(path: str | Path, max_pixels: int = MAX_PIXELS, channels: int | None = None) -> np.ndarray:
    """An image file's pixels (``decode`` of ``read_file``); BadImage (a ValueError) naming the file
    for anything unusable."""
    try:
        return decode(read_file(path), max_pixels, channels).pixels
    except BadImage as e:
        raise BadImage(e.status, f"{path}: {e}") from None


def read_file(path: str | Path, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes``, else BadImage. Opened non-blocking
    (a FIFO or a device never blocks), checked on the open file, read no further than the limit."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise BadImage(404, "no such file") from None
    except OSError as e:
        raise BadImage(403, f"cannot be read: {e.strerror or e}") from None
    try:
        check_regular(os.fstat(fd), max_bytes)
    except BadImage:
        os.close(fd)
        raise
    with open(fd, "rb") as file:
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BadImage(413, f"over {max_bytes:,} bytes: not read; make it smaller")
    return data


def check_regular(info: os.stat_result, max_bytes: int = MAX_BYTES) -> None:
    """BadImage unless ``info`` is a regular file of at most ``max_bytes``."""
    if not stat.S_ISREG(info.st_mode):
        what = ("a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode)
                else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
                else "a socket" if stat.S_ISSOCK(info.st_mode) else "not a file")
        raise BadImage(415, f"not a regular file ({what}): not read")
    if info.st_size > max_bytes:
        raise BadImage(413, f"{info.st_size:,} bytes, over {max_bytes:,}: not read; make it smaller")


def decode(data: bytes, max_pixels: int = MAX_PIXELS, channels: int | None = None,
           budget: int | None = None) -> Decoded:
    """PNG/JPEG/MPO/BMP/WebP bytes -> uint8 pixels, shrunk to the working size (see the module's rules):
    gray files 2-D, others BGR; ``channels`` 1 or 3 asks for gray (``runtime.preprocess``'s own rule) or BGR.

    BadImage (a ValueError: ``status`` is the HTTP status to answer) for anything unusable or too costly;
    ``budget``: the pixels a batch has left."""
    if not data:
        raise BadImage(400, "empty (0 bytes): no image in it")
    scans = check_structure(data)
    size = plain_png(data) if cv2 is not None else None
    pixels = decode_plain_png(data, size, max_pixels, budget) if size else None
    if pixels is not None:
        (width, height), lossy = size, False
    else:
        pixels, (width, height), lossy = decode_with_pillow(data, max_pixels, scans, budget)
    if channels == 1 and pixels.ndim == 3:
        from runtime.preprocess import to_gray

        pixels = to_gray(pixels)
    elif channels == 3 and pixels.ndim == 2:
        pixels = np.ascontiguousarray(np.repeat(pixels[..., None], 3, axis=2))
    return Decoded(pixels, max(pixels.shape[:2]) / max(width, height), (width, height), lossy)


def decode_with_pillow(data: bytes, max_pixels: int, scans: int,
                       budget: int | None) -> tuple[np.ndarray, tuple[int, int], bool]:
    """``decode``'s pixels (gray 2-D or BGR), the image's size as the user sees it and whether it is lossy."""
    image = open_image(data, max_pixels)
    try:
        orientation = exif_orientation(image)
        width, height = image.size
        if orientation in SWAPPING_ORIENTATIONS:
            width, height = height, width
        check_size(width, height, max_pixels)
        check_cost(image, data, max_pixels, scans)
        check_budget(width, height, budget)
        try:
            if image.format in JPEG_FORMATS:
                image.draft(image.mode, JPEG_TARGET)  # downscaled in the DCT when large
            image.load()  # a truncated or corrupt file fails here
            pixels = to_pixels(image, orientation)
            lossy = image.format in JPEG_FORMATS or (image.format == "WEBP" and webp_lossy(data))
        except Exception as e:  # truncated or corrupt pixel data
            if "truncated" in str(e):
                raise BadImage(400, f"truncated {image.format} (the file ends before its image data)") from None
            raise BadImage(400, f"cannot decode the image: {e}") from None
    finally:
        image.close()
    return pixels, (width, height), lossy


def plain_png(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a whole, intact PNG whose pixels are stored as this reader returns them: 8-bit gray
    or RGB, nothing to shrink, no chunk but its pixels and their size in inches (so no transparent colour,
    EXIF, animation, colour profile or text, which libpng would warn about on stderr when odd). OpenCV
    decodes those several times faster than Pillow, to the same pixels (PNG is lossless). Else None."""
    if not data.startswith(PNG_SIGNATURE) or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    if (data[24], data[25]) not in PLAIN_PNG:
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not (0 < width <= WORK_SIDE and 0 < height <= WORK_SIDE):
        return None
    position, pixels_seen = 8, False
    while position + 12 <= len(data):  # every chunk's CRC (check_structure bounded their number)
        length = int.from_bytes(data[position:position + 4], "big")
        kind, end = data[position + 4:position + 8], position + 8 + length
        if kind not in PLAIN_CHUNKS or end + 4 > len(data) \
                or zlib.crc32(data[position + 4:end]) != int.from_bytes(data[end:end + 4], "big"):
            return None
        if kind == b"IEND":
            return (width, height) if pixels_seen else None
        pixels_seen |= kind == b"IDAT"
        position = end + 4
    return None


def decode_plain_png(data: bytes, size: tuple[int, int], max_pixels: int, budget: int | None) -> np.ndarray | None:
    """A ``plain_png``'s pixels decoded by OpenCV (gray 2-D, or BGR); None if OpenCV cannot (Pillow says why)."""
    check_size(*size, max_pixels)
    check_budget(*size, budget)
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    expected = (size[1], size[0]) if data[25] == 0 else (size[1], size[0], 3)
    return pixels if pixels is not None and pixels.dtype == np.uint8 and pixels.shape == expected else None


def check_size(width: int, height: int, max_pixels: int) -> None:
    """The size as declared (before JPEG's draft mode): at most ``max_pixels``, and beyond the working size
    neither side more than MAX_ASPECT times the other."""
    if width * height > max_pixels:  # before a single pixel is decoded, before draft()
        raise BadImage(413, f"image is {width}x{height} pixels; the limit is {max_pixels:,} pixels")
    long, short = max(width, height), min(width, height)
    if long > WORK_SIDE and long > MAX_ASPECT * short:
        raise BadImage(422, f"image is {width}x{height} pixels: one side is more than {MAX_ASPECT} times "
                            "the other; crop it to the object")


def check_budget(width: int, height: int, budget: int | None) -> None:
    if budget is not None and width * height > budget:
        raise OverBudget(f"this one is {width}x{height}; {max(budget, 0):,} pixels were left")


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Read the header only; 415 for what is not an accepted image."""
    try:
        with warnings.catch_warnings():  # Pillow's DecompressionBombWarning: max_pixels decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise BadImage(415, "not an image this reads (PNG, JPEG, BMP or WebP)") from None
    except Image.DecompressionBombError as e:  # Pillow's own, far higher limit
        raise BadImage(413, f"image over the limit of {max_pixels:,} pixels ({e})") from None
    except Exception as e:  # a header the plugin cannot parse
        raise BadImage(400, f"cannot read the image header: {e}") from None
    if image.format not in ACCEPTED:  # pragma: no cover - Image.open only tries FORMATS
        image.close()
        raise BadImage(415, "not an image this reads (PNG, JPEG, BMP or WebP)")
    return image


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8) of a JPEG/MPO/WebP/PNG image; 1 (as stored) when absent or unreadable.
    Read from the header only (a PNG's eXIf chunk before its pixels: Pillow's getexif() would decode them)."""
    if image.format not in EXIF_FORMATS:
        return 1
    try:
        with warnings.catch_warnings():  # a broken EXIF block warns once per tag: thousands of lines
            warnings.simplefilter("ignore")
            value = read_exif(image).get(ExifTags.Base.Orientation, 1)
    except Exception:  # a broken EXIF block does not make the picture unusable
        return 1
    return value if isinstance(value, int) and value in TRANSPOSE else 1


def read_exif(image: Image.Image) -> Image.Exif:
    if image.format != "PNG":
        return image.getexif()
    exif = Image.Exif()
    exif.load(image.info.get("exif") or b"")
    return exif


def webp_lossy(data: bytes) -> bool:
    """Whether a WebP's image is VP8 (lossy) rather than VP8L (lossless), from its RIFF chunks."""
    position = 12
    for _ in range(64):  # bounded: a few chunks (VP8X, ICCP, ANIM, ALPH) come before the image's
        if position + 8 > len(data):
            break
        fourcc, size = data[position:position + 4], int.from_bytes(data[position + 4:position + 8], "little")
        if fourcc == b"ANMF":  # an animation's first frame: 16 bytes of its own, then its chunks
            position += 8 + 16
            continue
        if fourcc in (b"VP8 ", b"VP8L"):
            return fourcc != b"VP8L"
        position += 8 + size + (size & 1)
    return True


def to_pixels(image: Image.Image, orientation: int = 1) -> np.ndarray:
    """A loaded image -> uint8, gray 2-D or BGR, shrunk to the working size, on white, as the user sees it."""
    gray = image.mode in GRAY_MODES
    image = eight_bit(image)
    transparent = image.has_transparency_data
    if transparent:  # premultiplied, so that shrinking averages what is seen
        image = (image if image.mode == "RGBA" else image.convert("RGBA")).convert("RGBa")
    elif image.mode not in ("L", "RGB"):  # bilevel, palette, CMYK, YCbCr, LAB, HSV, RGBX
        image = image.convert("L" if gray else "RGB")
    factor = max(image.size) // WORK_SIDE
    if factor >= 2:
        image = image.reduce(factor)
    if transparent:
        premultiplied = np.asarray(image)
        # over white: c * a / 255 + 255 * (1 - a / 255), and c * a / 255 is the premultiplied value
        rgb = premultiplied[..., :3] + (255 - premultiplied[..., 3:])
        image = Image.fromarray(np.ascontiguousarray(rgb[..., 0] if gray else rgb), "L" if gray else "RGB")
    if orientation in TRANSPOSE:
        image = image.transpose(TRANSPOSE[orientation])
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        return pixels
    # RGB -> BGR: OpenCV swaps the channels ten times faster than numpy's strided copy (1 ms for 640x480)
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if cv2 is not None else np.ascontiguousarray(pixels[..., ::-1])


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit gray as 8-bit "L" ("LA" when a transparent gray level is set): the high byte, as
    Pillow reads 16-bit colour (its convert("L") would clip, not scale); float gray from 0-1 (or 0-255) to
    0-255, rounded. Other modes as they are."""
    if image.mode.startswith("I"):
        values = np.asarray(image)
        if image.mode != "I" or values.max(initial=0) > 255:  # "I": 16-bit values, or 8-bit ones widened
            pixels = (np.clip(values, 0, 65535) >> 8) if image.mode == "I" else values >> 8
        else:
            pixels = np.clip(values, 0, 255)
        gray = Image.fromarray(pixels.astype(np.uint8), "L")
        clear = image.info.get("transparency")
        if isinstance(clear, int):  # tRNS: this gray level is transparent
            gray.putalpha(Image.fromarray(np.where(values == clear, 0, 255).astype(np.uint8), "L"))
        return gray
    if image.mode == "F":
        values = np.nan_to_num(np.asarray(image, np.float64))
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        return Image.fromarray(np.clip(np.round(values / top * 255), 0, 255).astype(np.uint8), "L")
    return image
