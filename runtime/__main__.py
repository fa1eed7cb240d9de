"""python -m runtime IMAGE...: classify image files (PNG, JPEG, ...) with an exported model.

Files are read by the runtime's one image reader (``runtime.images``), as the HTTP API reads
uploads and training reads folders: the same file gives the same answer everywhere. A file
that is not a usable image (truncated, too large, not PNG/JPEG/BMP/WebP) is reported (exit 1)
and the others are still classified. The model's metadata says how to prepare them; "nothing
found" when no object stood out from the background.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runtime.images import load
from runtime.metadata import ModelError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime", description=__doc__)
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--model", type=Path, default=None, help="a model file, or a bundled model by name (default: edge)")
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
            prediction = predictor.predict(load(path))
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
