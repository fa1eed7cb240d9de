"""Frame sources: a camera (OpenCV/V4L2 or picamera2), a video file, a directory of images,
or synthetic camera-like frames rendered from bundled Fashion-MNIST test images."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from runtime.images import load

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}  # what runtime.images reads
SAMPLES = Path(__file__).parent / "samples.npz"  # 200 official test images, 20 per class


class SourceError(RuntimeError):
    """A source cannot be opened; the message says what was tried and what to do."""


class Source:
    live = False  # live sources drop stale frames; files are read at the consumer's pace
    name = "source"

    def read(self) -> np.ndarray | None:
        """The next BGR frame, or None when the stream ended or the device is gone."""
        raise NotImplementedError

    def reopen(self) -> bool:
        return False

    def close(self) -> None:
        pass


class CaptureSource(Source):
    """A source read through an OpenCV ``VideoCapture`` (a camera or a video file)."""
    capture: cv2.VideoCapture

    def read(self) -> np.ndarray | None:
        ok, frame = self.capture.read()
        return frame if ok else None

    def close(self) -> None:
        self.capture.release()


class CameraSource(CaptureSource):
    live = True

    def __init__(self, index: int, width: int, height: int):
        self.index, self.width, self.height = index, width, height
        self.name = f"camera {index}"
        if not self.reopen():
            raise SourceError(f"no camera at index {index}")

    def reopen(self) -> bool:
        if sys.platform == "linux" and not Path(f"/dev/video{self.index}").exists():
            return False  # V4L2 devices are /dev/videoN: no need to ask every OpenCV backend
        previous = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            backend = cv2.CAP_V4L2 if sys.platform == "linux" else cv2.CAP_ANY
            self.capture = cv2.VideoCapture(self.index, backend)
        finally:
            cv2.utils.logging.setLogLevel(previous)
        if not self.capture.isOpened():
            return False
        self.capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        self.capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self.capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # we want the newest frame, not a queue
        ok, _ = self.capture.read()
        return ok


class Picamera2Source(Source):
    live = True
    name = "picamera2"

    def __init__(self, width: int, height: int):
        try:
            from picamera2 import Picamera2
        except ImportError as e:
            raise SourceError("picamera2 is not installed: on Raspberry Pi OS, "
                              "`sudo apt install python3-picamera2` and create the venv with "
                              "--system-site-packages, or use --source 0 (V4L2)") from e
        self.camera = Picamera2()
        config = self.camera.create_video_configuration(main={"size": (width, height), "format": "BGR888"})
        self.camera.configure(config)
        self.camera.start()

    def read(self) -> np.ndarray | None:
        return self.camera.capture_array()

    def close(self) -> None:
        self.camera.stop()


class VideoSource(CaptureSource):
    def __init__(self, path: Path):
        self.name = str(path)
        self.capture = cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise SourceError(f"cannot open video {path}: is it a video file OpenCV can decode?")


class ImageDirSource(Source):
    def __init__(self, path: Path):
        self.name = str(path)
        self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")
        self.position = 0

    def read(self) -> np.ndarray | None:
        while self.position < len(self.files):
            path = self.files[self.position]
            self.position += 1
            try:
                return load(path, channels=3)  # read as python -m runtime and the HTTP API read it
            except ValueError as e:
                log.warning("skipping %s", e)
        return None


class SyntheticSource(Source):
    """Camera-like frames of bundled test images, each shown for ``hold`` frames."""
    name = "synthetic"

    def __init__(self, width: int, height: int, hold: int = 15, seed: int = 0):
        try:
            from simulator import camera_sim
        except ImportError:
            raise SourceError("the synthetic source renders frames with the desk simulator (simulator/), which "
                              "comes with the source tree, not the wheel: run from a clone of the repository, "
                              "or give --source a camera, a video or a folder of images") from None

        self.images = np.load(SAMPLES)["images"]
        self.render, self.size, self.hold = camera_sim.render, (width, height), hold
        self.rng = np.random.default_rng(seed)
        self.count, self.frame = 0, None

    def read(self) -> np.ndarray | None:
        if self.count % self.hold == 0:
            index = (self.count // self.hold) % len(self.images)
            self.frame = self.render(self.images[index], self.rng, size=self.size)
        self.count += 1
        return self.frame.copy()  # the demo draws its overlay on the frame it is given


def open_source(spec: str, width: int, height: int, tries: int = 4) -> Source:
    """``spec``: a camera index, "picamera2", "synthetic", a video file or an image directory."""
    if spec == "synthetic":
        return SyntheticSource(width, height)
    if spec == "picamera2":
        return Picamera2Source(width, height)
    if spec.isdigit():
        first = int(spec)
        tried = []
        for index in range(first, first + tries) if first == 0 else [first]:
            tried.append(index)
            try:
                return CameraSource(index, width, height)
            except SourceError:
                continue
        raise SourceError(f"no camera found (tried index {', '.join(map(str, tried))}); "
                          "connect one, pass --source N for another index, --source picamera2 "
                          "on a Raspberry Pi camera module, --source FILE.mp4 or DIR, or "
                          "--source synthetic to try the demo without a camera")
    path = Path(spec)
    if path.is_dir():
        return ImageDirSource(path)
    if path.is_file():
        return VideoSource(path)
    raise SourceError(f"--source {spec!r}: not a camera index, 'synthetic', 'picamera2', "
                      "a video file or a directory of images")
