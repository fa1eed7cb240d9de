"""python -m runtime IMAGE...: classify image files (PNG, JPEG, ...) with an exported model.

Colour files are read in OpenCV's BGR order, as Predictor expects; the model's metadata says
how to prepare them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runtime.metadata import ModelError


def read_image(path: Path):
    """BGR/gray/BGRA array of an image file, via OpenCV (the `camera` extra)."""
    try:
        import cv2
    except ImportError:
        raise SystemExit("error: reading image files needs OpenCV: pip install 'fashion-edge[camera]'") from None
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{path}: not an image OpenCV can read (PNG, JPEG, BMP, ...)")
    if image.dtype not in ("uint8", "uint16"):
        raise ValueError(f"{path}: unsupported pixel type {image.dtype}")
    return image


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
        else:
            print(f"{path}: {prediction.label} ({prediction.confidence:.1%})  "
                  + ", ".join(f"{name} {c:.1%}" for name, c in top[1:]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
