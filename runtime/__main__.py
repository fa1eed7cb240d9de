"""python -m runtime IMAGE...: classify image files (PNG, JPEG, ...) with an exported model.

Files are read as the HTTP API reads uploads: colour in OpenCV's BGR order, as Predictor
expects; a JPEG turned as its EXIF orientation says; transparent pixels composited on white;
a truncated PNG or JPEG refused (exit 1) rather than classified half grey. The model's
metadata says how to prepare them. "nothing found" when no object stood out from the background.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from runtime.metadata import ModelError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Any JPEG marker but a stuffed 0xFF00, a restart marker or a fill byte: what ends entropy-coded data.
JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def read_image(path: Path) -> np.ndarray:
    """Gray or BGR array (uint8 or uint16) of an image file, via OpenCV (the `camera` extra)."""
    try:
        import cv2
    except ImportError:
        raise SystemExit("error: reading image files needs OpenCV: pip install 'fashion-edge[camera]'") from None
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"{path}: empty file")
    problem = incomplete(data)
    if problem:
        raise ValueError(f"{path}: {problem}")
    jpeg = data.startswith(b"\xff\xd8")
    # a JPEG has no alpha: read it turned as EXIF says (IMREAD_UNCHANGED ignores the orientation)
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if jpeg else cv2.IMREAD_UNCHANGED
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise ValueError(f"{path}: not an image OpenCV can read (PNG, JPEG, BMP, ...)")
    if image.dtype not in ("uint8", "uint16"):
        raise ValueError(f"{path}: unsupported pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = on_white(image)
    return image


def on_white(bgra: np.ndarray) -> np.ndarray:
    """BGRA composited on white, as a browser shows a transparent image on a white page."""
    top = float(np.iinfo(bgra.dtype).max)
    alpha = bgra[..., 3:].astype(np.float32) / top
    return np.round(bgra[..., :3] * alpha + top * (1 - alpha)).astype(bgra.dtype)


def incomplete(data: bytes) -> str | None:
    """Why a PNG or JPEG file is cut short (its data end before its last chunk or marker), or None.

    OpenCV decodes a truncated JPEG without an error, the missing part grey."""
    if data.startswith(PNG_SIGNATURE):
        position = len(PNG_SIGNATURE)
        while position + 12 <= len(data):
            length, kind = int.from_bytes(data[position:position + 4], "big"), data[position + 4:position + 8]
            position += 12 + length
            if kind == b"IEND":
                return None if position <= len(data) else "truncated PNG (its last chunk is cut short)"
        return "truncated PNG (no IEND chunk: the file ends before its image data does)"
    if data.startswith(b"\xff\xd8"):
        return None if jpeg_complete(data) else "truncated JPEG (the file ends before its end-of-image marker)"
    return None


def jpeg_complete(data: bytes) -> bool:
    """Whether the JPEG's segments and scans lead to its end-of-image marker (trailing data allowed, as
    phones append a second picture or a video; an EXIF thumbnail is skipped with its segment)."""
    position, end = 2, len(data)
    while position + 2 <= end:
        if data[position] != 0xFF:  # stray bytes between segments: skipped, as libjpeg does
            found = JPEG_MARKER.search(data, position)
            if found is None:
                return False
            position = found.start()
        marker = data[position + 1]
        if marker == 0xD9:
            return True
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:
            position += 1 if marker == 0xFF else 2
            continue
        if position + 4 > end:
            return False
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if marker == 0xDA:  # a scan: its entropy-coded data run to the next marker
            found = JPEG_MARKER.search(data, position)
            if found is None:
                return False
            position = found.start()
    return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime", description=__doc__)
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--model", type=Path, default=None, help="default: the bundled int8 model")
    p.add_argument("--top-k", type=int, default=3, help="labels to show (at most the model's)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    args = p.parse_args(argv)
    if args.top_k < 1:
        p.error("--top-k must be at least 1")

    from runtime.predictor import Predictor

    try:
        predictor = Predictor(args.model, num_threads=args.threads)
    except (ModelError, ValueError) as e:  # ValueError: a bad --threads
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = 0
    for path in args.images:
        try:
            prediction = predictor.predict(read_image(path))
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        top = prediction.top_k(args.top_k)
        if args.json:
            print(json.dumps({"image": str(path), "label": prediction.label, "index": prediction.index,
                              "confidence": round(prediction.confidence, 4),
                              "object_found": prediction.object_found,
                              "top_k": [{"label": name, "confidence": round(c, 4)} for name, c in top]}))
        elif not prediction.object_found:
            print(f"{path}: nothing found (no object stood out from the background)")
        else:
            print(f"{path}: {prediction.label} ({prediction.confidence:.1%})  "
                  + ", ".join(f"{name} {c:.1%}" for name, c in top[1:]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
