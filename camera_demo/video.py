"""Writing a video file the way every result is written: under a temporary name, renamed when done."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2

from runtime.files import atomic_path


@contextmanager
def video_writer(path: Path, fps: float, size: tuple[int, int]) -> Iterator[cv2.VideoWriter]:
    """An mp4v ``cv2.VideoWriter`` for ``size`` (width, height) frames, through
    ``runtime.files.atomic_path``: the video appears under ``path`` when the block ends,
    and an exception inside the block removes the temporary file instead."""
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not writer.isOpened():
            raise OSError(f"cannot write video {path}")
        try:
            yield writer
        finally:
            writer.release()  # finalise the file before it is renamed (or removed)
