"""python -m export.restamp MODEL.tflite...: give .tflite files exported by ``python -m export`` the
standard TFLite metadata (``export.tflite_metadata``) they lack, or renew it; their answers do not change."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from export.convert import save_tflite
from runtime.backends import open_backend
from runtime.integrity import tflite_flatbuffer
from runtime.metadata import ModelError


def restamp(path: Path) -> None:
    """(Re)write the standard metadata of a .tflite we exported (before it had it, say) from its own
    contract: the graph, and so every answer, unchanged; the checksum verified first, then renewed
    (a file without one is refused: a new checksum would vouch for bytes nobody verified)."""
    ours = open_backend(path, num_threads=1).info  # refuses a corrupt file or one without our metadata
    if "integrity" not in ours.raw:
        raise ModelError(f"{path}: no checksum in its metadata to verify its graph first; re-export it with "
                         "`python -m export --format tflite`")
    mode = path.stat().st_mode
    metadata = {k: v for k, v in ours.raw.items() if k != "integrity"}
    contract = ours.contract
    probe = contract.from_unit(np.zeros((8, *contract.image_shape), np.float32))
    save_tflite(tflite_flatbuffer(path, path.read_bytes()), path, contract, metadata, probe)  # copies, never changes it
    os.chmod(path, mode)  # a read-only model stays read-only


def main(argv: list[str] | None = None) -> int:
    """python -m export.restamp MODEL.tflite...: add (or renew) the standard metadata of
    .tflite files exported by `python -m export`; their answers do not change."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("models", type=Path, nargs="+")
    for path in p.parse_args(argv).models:
        if path.suffix.lower() != ".tflite":
            p.error(f"{path}: not a .tflite file")
        try:
            restamp(path)
        except (ModelError, OSError, ValueError) as e:  # ValueError: a label labels.txt cannot hold
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
