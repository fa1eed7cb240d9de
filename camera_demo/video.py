"""Writing a video file the way every result is written: under a temporary name, renamed when done."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from runtime.files import atomic_path, check_writable


class CannotWrite(OSError):
    """A result (the video, its folder) cannot be written: read-only, missing, or the disk is full."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path


def check_record_path(path: Path) -> None:
    """Raise ``CannotWrite`` unless a file can be created beside ``path`` (its folder is made)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "it is a directory")
        check_writable(path.parent)
    except OSError as e:
        raise CannotWrite(path, e.strerror or str(e)) from e


def letterbox(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` scaled to fit ``size`` (width, height), keeping its aspect ratio, on black."""
    width, height = size
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[:2] == (height, width):
        return frame
    scale = min(width / frame.shape[1], height / frame.shape[0])
    w, h = max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale))
    canvas = np.zeros((height, width, 3), np.uint8)
    x, y = (width - w) // 2, (height - h) // 2
    canvas[y:y + h, x:x + w] = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    return canvas


class Recorder:
    """Frames of any size into one video of ``size``: each is letterboxed, and counted."""

    def __init__(self, writer: cv2.VideoWriter, size: tuple[int, int], path: Path):
        self.writer, self.size, self.path, self.frames = writer, size, path, 0

    def write(self, frame: np.ndarray) -> None:
        try:
            self.writer.write(letterbox(frame, self.size))
        except OSError as e:
            raise CannotWrite(self.path, e.strerror or str(e)) from e
        self.frames += 1

    def verify(self, written: Path) -> None:
        """The finished file holds every frame (OpenCV does not report failed writes, e.g. on a
        full disk): else ``CannotWrite``, and the temporary file is removed."""
        playback = cv2.VideoCapture(str(written))
        found = int(playback.get(cv2.CAP_PROP_FRAME_COUNT)) if playback.isOpened() else 0
        playback.release()
        if found != self.frames:
            raise CannotWrite(self.path, f"the written video has {found} of {self.frames} frames "
                                         "(is the disk full?)")


@contextmanager
def video_writer(path: Path, fps: float, size: tuple[int, int]) -> Iterator[Recorder]:
    """A ``Recorder`` writing an mp4v video of ``size`` (width, height) frames, through
    ``runtime.files.atomic_path``: the video appears under ``path`` when the block ends, checked
    to hold every frame, and an exception inside the block removes the temporary file instead.

    A failure of the video itself (the folder cannot be written, a frame cannot, the disk is
    full) is a ``CannotWrite``; the file that was at ``path`` before is then left untouched."""
    path = Path(path)
    recorder: Recorder | None = None
    in_block = False
    try:
        with atomic_path(path, lambda tmp: recorder.verify(tmp)) as tmp:
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
            if not writer.isOpened():
                raise CannotWrite(path, "OpenCV cannot open it for writing (is the folder writable "
                                        "and the suffix a video one, such as .mp4?)")
            recorder = Recorder(writer, size, path)
            try:
                in_block = True
                yield recorder
                in_block = False
            finally:
                writer.release()  # finalise the file before it is verified and renamed (or removed)
    except CannotWrite:
        raise
    except OSError as e:
        if in_block:  # not the video's: the caller's own error, as it was
            raise
        raise CannotWrite(path, e.strerror or str(e)) from e
