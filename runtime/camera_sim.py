"""Camera-like frames rendered from Fashion-MNIST images (needs OpenCV).

Fashion-MNIST garments are bright on black because the dataset negated its photos; a
webcam sees the photo: a dark garment on a light, tinted, unevenly lit backdrop, off
centre, at any size, slightly rotated, blurred and noisy. ``render`` makes such a frame
from a 28x28 image, reproducibly from a seeded generator, for tests, the demo's
synthetic source and the camera-domain evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None


@dataclass(frozen=True)
class Scene:
    height_range: tuple[float, float] = (0.4, 0.8)  # garment height / frame height
    max_offset: float = 0.12  # centre offset, as a fraction of the frame size
    max_rotation: float = 15.0  # degrees
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    noise_sigma: tuple[float, float] = (2.0, 8.0)  # of 0-255 pixel values
    gradient: float = 0.25  # peak-to-peak lighting change across the frame


STANDARD = Scene()
HARD = Scene(height_range=(0.25, 0.5), blur_sigma=(1.5, 3.0), noise_sigma=(8.0, 16.0), gradient=0.35)


def render(garment: np.ndarray, rng: np.random.Generator, scene: Scene = STANDARD,
           size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """A BGR uint8 frame of ``size`` (width, height) showing the 28x28 ``garment``."""
    if cv2 is None:
        raise RuntimeError("rendering camera frames needs OpenCV: pip install 'fashion-edge[camera]'")
    width, height = size
    # 1. the garment's coverage (alpha), scaled, rotated and placed off centre
    side = int(height * rng.uniform(*scene.height_range))
    alpha = cv2.resize(garment.astype(np.float32) / 255, (side, side), interpolation=cv2.INTER_CUBIC)
    cx = width / 2 + rng.uniform(-1, 1) * scene.max_offset * width
    cy = height / 2 + rng.uniform(-1, 1) * scene.max_offset * height
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(-1, 1) * scene.max_rotation, 1.0)
    matrix[:, 2] += (cx - side / 2, cy - side / 2)
    alpha = np.clip(cv2.warpAffine(alpha, matrix, (width, height)), 0, 1)[..., None]
    # 2. a light, tinted backdrop with a lighting gradient; a dark, coloured garment
    tint = rng.uniform(0.8, 1.0, 3)
    backdrop = rng.uniform(170, 235) * tint
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = ((xx / width - 0.5) * np.cos(angle) + (yy / height - 0.5) * np.sin(angle))
    light = 1 + scene.gradient * ramp[..., None]
    cloth = rng.uniform(10, 80, 3)
    frame = (backdrop * (1 - alpha) + cloth * alpha) * light
    # 3. optics and sensor: blur, noise
    frame = cv2.GaussianBlur(frame.astype(np.float32), (0, 0), rng.uniform(*scene.blur_sigma))
    frame += rng.normal(0, rng.uniform(*scene.noise_sigma), frame.shape).astype(np.float32)
    return np.clip(frame, 0, 255).astype(np.uint8)
