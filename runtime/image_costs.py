"""What decoding an image file costs, judged from its header before a pixel is decoded: the limits and
the checks ``runtime.images.decode`` applies to every file.

What decoding costs, measured with Pillow 13 on a 2-core EPYC VM (a 16 MP image of noise, the
worst case; a flat image costs 2-4x less time, the same memory):

  format              CPU ms/MP   held while decoding, bytes a pixel
  BMP                    1-3      the pixels (1-4)
  PNG                    5-10     the pixels (1-4)
  JPEG, baseline         6-10     the draft-scaled output only
  JPEG, progressive     24-32     + 2 for every DCT coefficient of every component (3 for 4:2:0 colour)
  WebP                  30-58     16: libwebp's two RGBA canvases, their copy, the image
  BMP, RLE4/RLE8       17-125     pure Python (Pillow's BmpRleDecoder) holding the GIL

So: no decoder may hold more than an RGBA image at the pixel limit would (4 bytes a pixel,
64 MB at the default), and the pure-Python decoder gets 1/16 of the pixels (1 MP, at most
about 0.13 s). Uncompressed and BI_BITFIELDS BMPs go through C (0.05 s for 16 MP). And a file of
more pieces than any encoder writes is refused before Pillow reads them (``check_structure``).
"""

from __future__ import annotations

import re

from PIL import Image

JPEG_FORMATS = ("JPEG", "MPO")  # Pillow names a JPEG with an MP extension (a phone's MPO) "MPO"
DECODE_BYTES_PER_PIXEL = 4
WEBP_BYTES_PER_PIXEL = 16
PYTHON_DECODER_SHARE = 16
MAX_JPEG_SCANS = 64  # libjpeg's progressive scripts use 6-12; each scan is a pass over the coefficients
MAX_JPEG_SEGMENTS = 512  # a phone's JPEG has 10-40 (APPn, DQT, DHT, ...); Pillow keeps every one in memory
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHUNKS, PNG_CHUNK_BYTES = 64, 1024  # at most 64 chunks + one a KB (encoders write 8-64 KB of pixels a chunk)
BMP_RLE = (1, 2)  # BITMAPINFOHEADER compression: RLE8, RLE4
# Any marker but a stuffed 0xFF00, a restart marker or fill bytes: what ends a scan's entropy-coded data.
JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


class BadImage(ValueError):
    """An upload that is not a usable image; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


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


def check_cost(image: Image.Image, data: bytes, max_pixels: int, scans: int = 0) -> None:
    """Refuse, from the header, an image whose format's decoder would cost more than ``max_pixels`` of RGBA
    would (or, for Pillow's pure-Python decoder, a 16th of them): the table above."""
    width, height = image.size
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
