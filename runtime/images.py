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

Everything is judged from the header, before a single pixel is decoded (``check_cost``):

- the size as declared (before JPEG's draft mode): at most ``max_pixels`` (``MAX_PIXELS``);
- the shape: beyond the working size, neither side may be more than 20 times the other (a 15 KB
  PNG of 4 x 4,000,000 pixels is within 16 MP, but nothing could be made of it);
- what the format's decoder costs (measured, below): compressed BMPs are decoded by Pillow in pure
  Python, WebP through libwebp's animation decoder, progressive (and multi-scan) JPEGs hold every
  DCT coefficient of the full image whatever the draft size.

Files are read by ``read_file``: regular files only (never a FIFO or a device: reading one blocks
or never ends), at most ``MAX_BYTES``, read no further than that.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

MAX_PIXELS = 16_000_000  # of an image, as its header declares it: a 12 MP phone photo passes
MAX_BYTES = 64 << 20  # of a file: a phone photo takes a few MB, a 16-bit scan tens; a bigger one is never read
FORMATS = ("PNG", "JPEG", "BMP", "WEBP")  # what Image.open may try; see JPEG_FORMATS for MPO
# Pillow opens a JPEG with an MP extension (a phone's MPO) through the JPEG plugin as format "MPO"
# ("MPO" cannot be given to Image.open's formats): both are decoded the same way.
JPEG_FORMATS = ("JPEG", "MPO")
ACCEPTED = (*FORMATS, "MPO")
WORK_SIDE = 1024  # decoded images are shrunk to a longest side between this and twice this
# A JPEG larger than this is decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself (cheap,
# and the object still spans far more pixels than a small model's input).
JPEG_TARGET = (1024, 768)
MAX_ASPECT = 20  # longest side / shortest side, for images longer than WORK_SIDE
# What decoding costs, measured with Pillow 13 on a 2-core EPYC VM (a 16 MP image of noise, the
# worst case; a flat image costs 2-4x less time, the same memory):
#
#   format              CPU ms/MP   held while decoding, bytes a pixel
#   BMP                    1-3      the pixels (1-4)
#   PNG                    5-10     the pixels (1-4)
#   JPEG, baseline         6-10     the draft-scaled output only
#   JPEG, progressive     24-32     + 2 for every DCT coefficient of every component (3 for 4:2:0 colour)
#   WebP                  30-58     16: libwebp's two RGBA canvases, their copy, the image
#   BMP, RLE4/RLE8       17-125     pure Python (Pillow's BmpRleDecoder) holding the GIL
#
# So: no decoder may hold more than an RGBA image at the pixel limit would (4 bytes a pixel,
# 64 MB at the default), and the pure-Python decoder gets 1/16 of the pixels (1 MP, at most
# about 0.13 s). Uncompressed and BI_BITFIELDS BMPs go through C (0.05 s for 16 MP).
DECODE_BYTES_PER_PIXEL = 4
WEBP_BYTES_PER_PIXEL = 16
PYTHON_DECODER_SHARE = 16
MAX_JPEG_SCANS = 64  # libjpeg's progressive scripts use 6-12; each scan is a pass over the coefficients
MAX_JPEG_SEGMENTS = 512  # a phone's JPEG has 10-40 (APPn, DQT, DHT, ...); Pillow keeps every one in memory
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHUNKS, PNG_CHUNK_BYTES = 64, 1024  # at most 64 chunks + one a KB (encoders write 8-64 KB of pixels a chunk)
BMP_RLE = (1, 2)  # BITMAPINFOHEADER compression: RLE8, RLE4
EXIF_FORMATS = (*JPEG_FORMATS, "WEBP", "PNG")
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that turn the picture by 90 degrees
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}  # as ImageOps.exif_transpose, applied to the shrunk image
# Any marker but a stuffed 0xFF00, a restart marker or fill bytes: what ends a scan's entropy-coded data.
JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


class BadImage(ValueError):
    """An upload that is not a usable image; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


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
    image = open_image(data, max_pixels)
    try:
        orientation = exif_orientation(image)
        width, height = image.size
        if orientation in SWAPPING_ORIENTATIONS:
            width, height = height, width
        check_cost(image, data, (width, height), max_pixels, scans)
        if budget is not None and width * height > budget:
            raise OverBudget(f"this one is {width}x{height}; {max(budget, 0):,} pixels were left")
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
    if channels == 1 and pixels.ndim == 3:
        from runtime.preprocess import to_gray

        pixels = to_gray(pixels)
    elif channels == 3 and pixels.ndim == 2:
        pixels = np.ascontiguousarray(np.repeat(pixels[..., None], 3, axis=2))
    return Decoded(pixels, max(pixels.shape[:2]) / max(width, height), (width, height), lossy)


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


def check_structure(data: bytes) -> int:
    """Refuse, before Pillow reads a header, a PNG or JPEG made of more pieces than any encoder writes: Pillow
    reads a PNG's chunks and a JPEG's segments one by one in Python, and keeps a JPEG's segments in memory.
    Returns a JPEG's scans (0 for other formats)."""
    if data.startswith(PNG_SIGNATURE):
        limit = PNG_CHUNKS + len(data) // PNG_CHUNK_BYTES
        if png_chunks(data, limit) > limit:
            raise BadImage(413, f"PNG of {len(data):,} bytes in more than {limit:,} chunks; save it again")
    elif data.startswith(b"\xff\xd8"):
        scans, segments = jpeg_segments(data)
        if scans > MAX_JPEG_SCANS:
            raise BadImage(413, f"JPEG with more than {MAX_JPEG_SCANS} scans; save it again as a baseline JPEG")
        if segments > MAX_JPEG_SEGMENTS:
            raise BadImage(413, f"JPEG with more than {MAX_JPEG_SEGMENTS} segments; save it again")
        return scans
    return 0


def check_cost(image: Image.Image, data: bytes, size: tuple[int, int], max_pixels: int, scans: int = 0) -> None:
    """Refuse, from the header, an image whose decoding would cost more than the limits allow."""
    width, height = size
    if width * height > max_pixels:  # before a single pixel is decoded, before draft()
        raise BadImage(413, f"image is {width}x{height} pixels; the limit is {max_pixels:,} pixels")
    long, short = max(width, height), min(width, height)
    if long > WORK_SIDE and long > MAX_ASPECT * short:
        raise BadImage(422, f"image is {width}x{height} pixels: one side is more than {MAX_ASPECT} times "
                            "the other; crop it to the object")
    memory_budget = DECODE_BYTES_PER_PIXEL * max_pixels
    if image.format == "BMP" and image.info.get("compression") in BMP_RLE:
        limit = max_pixels // PYTHON_DECODER_SHARE
        if width * height > limit:
            raise BadImage(413, f"RLE-compressed BMP of {width}x{height} pixels; the limit for compressed BMPs "
                                f"is {limit:,} pixels (send it uncompressed, or as PNG)")
        if len(data) > 2 * width * height + 4 * height + 65536:  # runs a pixel at most, one end of line a row
            raise BadImage(413, f"RLE-compressed BMP of {len(data):,} bytes for {width}x{height} pixels: more "
                                "than its pixels could need (send it uncompressed, or as PNG)")
    elif image.format == "WEBP" and WEBP_BYTES_PER_PIXEL * width * height > memory_budget:
        limit = memory_budget // WEBP_BYTES_PER_PIXEL
        raise BadImage(413, f"WebP of {width}x{height} pixels; the limit for WebP is {limit:,} pixels "
                            "(its decoder holds 16 bytes a pixel; send it as PNG or JPEG)")
    elif image.format in JPEG_FORMATS:
        if image.info.get("progressive") or scans > 1:  # libjpeg keeps every coefficient until the last scan
            needed = jpeg_coefficient_bytes(image)
            if needed > memory_budget:
                raise BadImage(413, f"progressive JPEG of {width}x{height} pixels needs {needed / 2**20:.0f} MB "
                                    f"to decode; the limit is {memory_budget / 2**20:.0f} MB (about "
                                    f"{memory_budget // 6:,} pixels of 4:4:4 colour; send it as baseline JPEG)")


def jpeg_segments(data: bytes) -> tuple[int, int]:
    """How many scans (SOS markers) and other segments the JPEG's main image has, walking its segments as
    libjpeg reads them (bytes between segments skipped to the next marker; an EXIF thumbnail inside APP1
    is skipped with its segment). Stops counting past the limits: what matters is that they are passed."""
    scans, segments, position, end = 0, 0, 2, len(data)
    while position + 4 <= end and scans <= MAX_JPEG_SCANS and segments <= MAX_JPEG_SEGMENTS:
        if data[position] != 0xFF or data[position + 1] in (0x00, 0xFF):  # junk, a stuffed byte or fill
            found = JPEG_MARKER.search(data, position + 1)
            if found is None:
                break
            position = found.start()
            continue
        marker = data[position + 1]
        if marker == 0xD9:  # EOI
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length
            position += 2
            continue
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if marker == 0xDA:  # SOS: then entropy-coded data up to the next marker
            scans += 1
            found = JPEG_MARKER.search(data, position)
            if found is None:
                break
            position = found.start()
        else:
            segments += 1
    return scans, segments


def png_chunks(data: bytes, limit: int) -> int:
    """How many chunks a PNG has, counted up to ``limit`` + 1 (Pillow reads each in a Python loop)."""
    chunks, position, end = 0, 8, len(data)
    while position + 8 <= end and chunks <= limit:
        position += 12 + int.from_bytes(data[position:position + 4], "big")
        chunks += 1
    return chunks


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


def jpeg_coefficient_bytes(image: Image.Image) -> int:
    """libjpeg's whole-image coefficient buffer: 2 bytes for each DCT coefficient of each component,
    by the components' sampling factors (Pillow's ``layer``: id, horizontal, vertical, table)."""
    width, height = image.size
    layers = getattr(image, "layer", None) or [(None, 1, 1, 0)] * len(image.getbands())
    h_max = max(layer[1] for layer in layers) or 1
    v_max = max(layer[2] for layer in layers) or 1
    return sum(ceil_div(ceil_div(width * h, h_max), 8) * ceil_div(ceil_div(height * v, v_max), 8) * 64 * 2
               for _, h, v, _ in layers)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


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
    return pixels if pixels.ndim == 2 else np.ascontiguousarray(pixels[..., ::-1])


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
