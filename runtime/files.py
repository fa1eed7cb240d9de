"""Atomic file writes: a temporary file beside the target, verified, then renamed into place.

The one way every package writes a result (models, reports, plots, videos, JSON), so a
kill or Ctrl-C never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path, verify: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success verify it and rename it over ``path``.

    An exception or Ctrl-C (KeyboardInterrupt) removes the temporary file and leaves any
    existing ``path`` untouched. The temporary name keeps the suffix, so writers that pick
    a format by suffix (Keras, OpenCV, matplotlib) still do.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield tmp
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_json(path: Path, payload: object) -> Path:
    """Indented, strict JSON (NaN and infinity are refused rather than written bare)."""
    return write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")
