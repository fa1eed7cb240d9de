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
    # a real desk: textured surface, vignetting, the garment's shadow, a table edge or a
    # sleeve entering the frame, JPEG compression
    texture: float = 0.0  # amplitude of a blotchy surface texture (fraction of brightness)
    vignette: float = 0.0  # brightness lost in the corners
    shadow: float = 0.0  # opacity of the garment's soft shadow
    edge_prob: float = 0.0  # chance of a dark band (table edge, sleeve) along one side
    jpeg_quality: int | None = None


STANDARD = Scene()
HARD = Scene(height_range=(0.25, 0.5), blur_sigma=(1.5, 3.0), noise_sigma=(8.0, 16.0), gradient=0.35)
DESK = Scene(texture=0.08, vignette=0.3, shadow=0.3, edge_prob=0.5, jpeg_quality=70)


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
    if scene.vignette:
        r2 = ((xx / width - 0.5) ** 2 + (yy / height - 0.5) ** 2) / 0.5
        light = light * (1 - scene.vignette * r2[..., None])
    surface = np.broadcast_to(backdrop, (height, width, 3)).astype(np.float32)
    if scene.texture:
        blotches = cv2.resize(rng.normal(0, 1, (height // 40, width // 40)).astype(np.float32), (width, height),
                              interpolation=cv2.INTER_CUBIC)
        surface = surface * (1 + scene.texture * blotches[..., None])
    if scene.shadow:
        shift = np.float32([[1, 0, rng.uniform(5, 20)], [0, 1, rng.uniform(5, 20)]])
        shade = cv2.GaussianBlur(cv2.warpAffine(alpha[..., 0], shift, (width, height)), (0, 0), 12)
        surface = surface * (1 - scene.shadow * shade[..., None])
    if rng.uniform() < scene.edge_prob:  # a dark band along one side of the frame
        band = int(rng.uniform(0.05, 0.12) * min(width, height))
        side = rng.integers(4)
        region = [np.s_[:band, :], np.s_[-band:, :], np.s_[:, :band], np.s_[:, -band:]][side]
        surface = surface.copy()
        surface[region] = rng.uniform(20, 70, 3)
    cloth = rng.uniform(10, 80, 3)
    frame = (surface * (1 - alpha) + cloth * alpha) * light
    # 3. optics and sensor: blur, noise
    frame = cv2.GaussianBlur(frame.astype(np.float32), (0, 0), rng.uniform(*scene.blur_sigma))
    frame += rng.normal(0, rng.uniform(*scene.noise_sigma), frame.shape).astype(np.float32)
    frame = np.clip(frame, 0, 255).astype(np.uint8)
    if scene.jpeg_quality:
        _, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, scene.jpeg_quality])
        frame = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return frame
