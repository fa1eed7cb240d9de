"""Camera-like frames rendered from Fashion-MNIST images (needs OpenCV).

Fashion-MNIST garments are bright on black because the dataset negated its photos; a
webcam sees the photo: a dark garment on a light, tinted, unevenly lit backdrop, off
centre, at any size, slightly rotated, blurred and noisy. ``render`` makes such a frame
from a 28x28 image, reproducibly from a seeded generator, for tests, the demo's
synthetic source and the camera-domain evaluation.

A real desk adds clutter, each kind a field of ``Scene`` (off by default, so the standard,
hard and desk scenes render the very frames they always did): a surface with wood grain,
a fabric weave or blotches; vignetting; one or two light sources, each casting the
garment's soft shadow; a dark table edge, a sleeve or a keyboard's edge in view; phone
colour (white-balance cast, saturation, gamma); motion blur; perspective; JPEG. ``SCENES``
names the sets ``python -m train.camera_eval`` measures.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    # richer clutter (all off by default: the scenes above draw the same random numbers)
    surfaces: tuple[str, ...] = ("blotches",)  # texture kinds, one drawn per frame (see SURFACES)
    lights: int = 1  # light sources: each casts a shadow in its own direction (2: a desk lamp and a window)
    keyboard_prob: float = 0.0  # chance of a keyboard's edge (dark body, key caps) along one side
    sleeve_prob: float = 0.0  # chance of a sleeve (a soft dark or coloured arm) reaching in from a side
    colour_cast: float = 0.0  # phone white balance: per-channel gain spread (0.1: +-10%)
    saturation: tuple[float, float] = (1.0, 1.0)  # phone colour processing: chroma gain
    gamma: tuple[float, float] = (1.0, 1.0)  # tone curve exponent (<1 brightens shadows)
    motion_blur: float = 0.0  # longest motion streak, in pixels (a hand-held garment)
    perspective: float = 0.0  # largest corner shift, as a fraction of the frame (a camera not square-on)
    jpeg_range: tuple[int, int] | None = None  # JPEG quality drawn per frame (overrides jpeg_quality)
    black_fill: bool = False  # perspective leaves black corners (OpenCV's default), not mirrored edges
    # colours: a light backdrop (level x per-channel tint) and a dark object, as a garment on a desk;
    # with ``dark_backdrop`` that chance of the reverse (a light object on a dark cloth or table)
    backdrop_level: tuple[float, float] = (170.0, 235.0)
    backdrop_tint: tuple[float, float] = (0.8, 1.0)  # per channel: (0.3, 1.0) gives strongly coloured backdrops
    object_level: tuple[float, float] = (10.0, 80.0)  # per channel
    dark_backdrop: float = 0.0


STANDARD = Scene()
HARD = Scene(height_range=(0.25, 0.5), blur_sigma=(1.5, 3.0), noise_sigma=(8.0, 16.0), gradient=0.35)
DESK = Scene(texture=0.08, vignette=0.3, shadow=0.3, edge_prob=0.5, jpeg_quality=70)
# one kind of clutter each, on top of a moderate desk (vignette, a shadow, JPEG)
WOOD = Scene(texture=0.10, surfaces=("wood",), vignette=0.2, shadow=0.3, jpeg_quality=75)
FABRIC = Scene(texture=0.10, surfaces=("fabric",), vignette=0.2, shadow=0.3, jpeg_quality=75)
KEYBOARD = Scene(texture=0.04, vignette=0.2, shadow=0.3, keyboard_prob=1.0, jpeg_quality=75)
LAMPS = Scene(texture=0.04, vignette=0.2, shadow=0.4, lights=2, jpeg_quality=75)
PHONE = Scene(texture=0.04, vignette=0.2, shadow=0.3, colour_cast=0.15, saturation=(0.8, 1.4),
              gamma=(0.7, 1.4), motion_blur=12.0, jpeg_range=(50, 90))
# all of it at once, drawn per frame: what a phone sees on a real, cluttered desk
CLUTTERED = Scene(texture=0.08, surfaces=("blotches", "wood", "fabric"),
                  vignette=0.3, shadow=0.35, lights=2, edge_prob=0.3, keyboard_prob=0.2, sleeve_prob=0.2,
                  colour_cast=0.1, saturation=(0.8, 1.3), gamma=(0.75, 1.3), motion_blur=6.0,
                  perspective=0.08, jpeg_range=(50, 90))
# the desk seen by a camera that is not square-on: its edge a slanted band, the garment skewed
ANGLED = Scene(texture=0.08, vignette=0.3, shadow=0.3, edge_prob=0.5, perspective=0.08, jpeg_quality=70)
# ...its picture warped by software that fills the corners with black (a rectified or rotated photo)
WARPED = replace(ANGLED, black_fill=True)
# ...without its edge, a sleeve or an arm reaching in from a side in every frame, beside the garment or onto it
SLEEVE = replace(ANGLED, edge_prob=0.0, sleeve_prob=1.0)
# ...as a webcam or a phone takes it any day: a little more texture and shadow, an edge in half the
# frames and a sleeve in one in five, gamma and JPEG drawn per frame (issue 18's hidden frames, as worded)
EVERYDAY = replace(ANGLED, texture=0.09, shadow=0.35, perspective=0.06, sleeve_prob=0.2, gamma=(0.8, 1.25),
                   jpeg_range=(55, 85))
SCENES = {"standard": STANDARD, "hard": HARD, "desk": DESK, "wood": WOOD, "fabric": FABRIC,
          "keyboard": KEYBOARD, "lamps": LAMPS, "phone": PHONE, "cluttered": CLUTTERED, "angled": ANGLED,
          "warped": WARPED, "sleeve": SLEEVE, "everyday": EVERYDAY}


def render(garment: np.ndarray, rng: np.random.Generator, scene: Scene = STANDARD,
           size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """A BGR uint8 frame of ``size`` (width, height) showing the 28x28 ``garment``."""
    if cv2 is None:
        raise RuntimeError("rendering camera frames needs OpenCV: pip install 'fashion-edge[camera]'")
    width, height = size
    dark = bool(scene.dark_backdrop) and rng.random() < scene.dark_backdrop  # drawn only when asked for
    # 1. the garment's coverage (alpha), scaled, rotated and placed off centre
    side = int(height * rng.uniform(*scene.height_range))
    alpha = cv2.resize(garment.astype(np.float32) / 255, (side, side), interpolation=cv2.INTER_CUBIC)
    cx = width / 2 + rng.uniform(-1, 1) * scene.max_offset * width
    cy = height / 2 + rng.uniform(-1, 1) * scene.max_offset * height
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(-1, 1) * scene.max_rotation, 1.0)
    matrix[:, 2] += (cx - side / 2, cy - side / 2)
    alpha = np.clip(cv2.warpAffine(alpha, matrix, (width, height)), 0, 1)[..., None]
    # 2. a light, tinted backdrop with a lighting gradient; a dark, coloured garment
    tint = rng.uniform(*scene.backdrop_tint, 3)
    backdrop = rng.uniform(*scene.backdrop_level) * tint
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = ((xx / width - 0.5) * np.cos(angle) + (yy / height - 0.5) * np.sin(angle))
    light = 1 + scene.gradient * ramp[..., None]
    if scene.vignette:
        r2 = ((xx / width - 0.5) ** 2 + (yy / height - 0.5) ** 2) / 0.5
        light = light * (1 - scene.vignette * r2[..., None])
    surface = np.broadcast_to(backdrop, (height, width, 3)).astype(np.float32)
    if scene.texture:
        surface = surface * texture(rng, scene, height, width)
    surface = shadows(surface, alpha[..., 0], rng, scene)
    surface = clutter(surface, rng, scene, xx, yy)
    cloth = rng.uniform(*scene.object_level, 3)
    if dark:  # the reverse: a dark surface (its texture and shadow kept) under a light object
        surface, cloth = surface * 0.3, 255 - cloth
    frame = (surface * (1 - alpha) + cloth * alpha) * light
    frame = phone_colour(frame, rng, scene)
    # 3. optics and sensor: perspective, blur, motion, noise
    if scene.perspective:
        frame = tilt(frame, rng, scene.perspective, scene.black_fill)
    frame = cv2.GaussianBlur(frame.astype(np.float32), (0, 0), rng.uniform(*scene.blur_sigma))
    if scene.motion_blur:
        frame = motion(frame, rng, scene.motion_blur)
    frame += rng.normal(0, rng.uniform(*scene.noise_sigma), frame.shape).astype(np.float32)
    frame = np.clip(frame, 0, 255).astype(np.uint8)
    quality = int(rng.integers(scene.jpeg_range[0], scene.jpeg_range[1] + 1)) if scene.jpeg_range else \
        scene.jpeg_quality
    if quality:
        _, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        frame = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return frame


# --- the surface ---------------------------------------------------------------------------

def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Gaussian noise on a grid of ``cell``-pixel cells, smoothly upsampled to the frame."""
    grid = rng.normal(0, 1, (max(2, height // cell), max(2, width // cell))).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def wood(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Wood grain: boards with wavy annual rings, fibre streaks and dark seams, along x or y."""
    vertical = rng.uniform() < 0.5
    h, w = (width, height) if vertical else (height, width)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    warp = 25 * smooth_noise(rng, h, w, 120)  # rings meander by about a period
    rings = np.sin(2 * np.pi * (yy + warp) / rng.uniform(8, 20))
    fibres = cv2.resize(rng.normal(0, 1, (h, max(2, w // 60))).astype(np.float32), (w, h),
                        interpolation=cv2.INTER_LINEAR)  # long along the board
    board = rng.uniform(60, 150)
    seams = (np.mod(yy + rng.uniform(0, board), board) < 2).astype(np.float32)
    grain = 0.6 * rings + 0.5 * fibres - 3.0 * seams
    return grain.T.copy() if vertical else grain


def fabric(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Cloth: a fine weave (period 3-6 px) and soft folds that shade it."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(3, 6)
    weave = np.sin(2 * np.pi * xx / period) * np.sin(2 * np.pi * yy / period)
    folds = smooth_noise(rng, height, width, 90)
    return 0.5 * weave + 1.2 * folds


def blotches(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """The original desk's blotchy surface (40-pixel cells)."""
    return smooth_noise(rng, height, width, 40)


SURFACES = {"blotches": blotches, "wood": wood, "fabric": fabric}
WOOD_TINT = np.float32([0.62, 0.8, 1.0])  # BGR: light oak (red and green over blue)


def texture(rng: np.random.Generator, scene: Scene, height: int, width: int) -> np.ndarray:
    """(H, W, 1 or 3) gain of the surface's brightness, of a kind drawn from ``scene.surfaces``."""
    kind = scene.surfaces[rng.integers(len(scene.surfaces))] if len(scene.surfaces) > 1 else scene.surfaces[0]
    if kind not in SURFACES:
        raise ValueError(f"unknown surface {kind!r}; one of {', '.join(SURFACES)}")
    grain = scene.texture * SURFACES[kind](rng, height, width)[..., None]
    return grain + (WOOD_TINT if kind == "wood" else 1)  # wood is brown over the backdrop's own tint


# --- shadows and clutter -------------------------------------------------------------------

def shadows(surface: np.ndarray, alpha: np.ndarray, rng: np.random.Generator, scene: Scene) -> np.ndarray:
    """The garment's soft shadow on the surface, one per light source."""
    if not scene.shadow:
        return surface
    height, width = alpha.shape
    if scene.lights == 1:  # the original desk's shadow: down and to the right
        shift = np.float32([[1, 0, rng.uniform(5, 20)], [0, 1, rng.uniform(5, 20)]])
        shade = cv2.GaussianBlur(cv2.warpAffine(alpha, shift, (width, height)), (0, 0), 12)
        return surface * (1 - scene.shadow * shade[..., None])
    strength = rng.dirichlet(np.ones(scene.lights)) * scene.lights * scene.shadow * 0.7  # lights share the dark
    for opacity in strength:
        direction, distance = rng.uniform(0, 2 * np.pi), rng.uniform(5, 30)
        shift = np.float32([[1, 0, distance * np.cos(direction)], [0, 1, distance * np.sin(direction)]])
        shade = cv2.GaussianBlur(cv2.warpAffine(alpha, shift, (width, height)), (0, 0), rng.uniform(6, 16))
        surface = surface * (1 - min(opacity, 0.6) * shade[..., None])
    return surface


def side_coordinates(side: int, xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance into the frame from ``side``, position along it): 0 top, 1 bottom, 2 left, 3 right."""
    height, width = xx.shape
    return [(yy, xx), (height - 1 - yy, xx), (xx, yy), (width - 1 - xx, yy)][side]


def keyboard(surface: np.ndarray, rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """A dark keyboard along one side: its body and a staggered grid of slightly lighter key caps."""
    across, along = side_coordinates(int(rng.integers(4)), xx, yy)
    depth = rng.uniform(0.1, 0.2) * min(xx.shape)
    pitch = rng.uniform(22, 34)
    row = np.floor(across / pitch)
    keys = (np.mod(along + row * pitch / 3, pitch) > 4) & (np.mod(across, pitch) > 4)
    body, caps = rng.uniform(15, 45, 3), rng.uniform(35, 90, 3)
    colour = np.where(keys[..., None], caps, body)
    inside = (across < depth)[..., None]
    return np.where(inside, colour, surface).astype(np.float32)


def sleeve(surface: np.ndarray, rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """A sleeve reaching in from one side: a soft-edged band ending a third of the way in."""
    height, width = xx.shape
    across, along = side_coordinates(int(rng.integers(4)), xx, yy)
    span = height if along is yy else width
    centre, thick = rng.uniform(0.2, 0.8) * span, rng.uniform(0.12, 0.22) * min(height, width)
    reach = rng.uniform(0.15, 0.35) * (width if along is yy else height)
    slant = rng.uniform(-0.5, 0.5)
    inside = (np.abs(along - centre - slant * across) < thick / 2) & (across < reach)
    mask = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), 3)[..., None]
    return (surface * (1 - mask) + rng.uniform(20, 160, 3) * mask).astype(np.float32)


def clutter(surface: np.ndarray, rng: np.random.Generator, scene: Scene, xx: np.ndarray,
            yy: np.ndarray) -> np.ndarray:
    """Things beside the garment: a dark table edge or sleeve band, a keyboard, a sleeve."""
    height, width = xx.shape
    if rng.uniform() < scene.edge_prob:  # a dark band along one side of the frame
        band = int(rng.uniform(0.05, 0.12) * min(width, height))
        side = rng.integers(4)
        region = [np.s_[:band, :], np.s_[-band:, :], np.s_[:, :band], np.s_[:, -band:]][side]
        surface = surface.copy()
        surface[region] = rng.uniform(20, 70, 3)
    if scene.keyboard_prob and rng.uniform() < scene.keyboard_prob:
        surface = keyboard(surface, rng, xx, yy)
    if scene.sleeve_prob and rng.uniform() < scene.sleeve_prob:
        surface = sleeve(surface, rng, xx, yy)
    return surface


# --- the camera ----------------------------------------------------------------------------

def phone_colour(frame: np.ndarray, rng: np.random.Generator, scene: Scene) -> np.ndarray:
    """A phone's colour processing: white-balance cast, saturation and a tone curve."""
    if scene.colour_cast:
        frame = frame * rng.uniform(1 - scene.colour_cast, 1 + scene.colour_cast, 3).astype(np.float32)
    if scene.saturation != (1.0, 1.0):
        gray = frame.mean(axis=2, keepdims=True)
        frame = gray + rng.uniform(*scene.saturation) * (frame - gray)
    if scene.gamma != (1.0, 1.0):
        frame = 255 * (np.clip(frame, 0, 255) / 255) ** rng.uniform(*scene.gamma)
    return frame


def tilt(frame: np.ndarray, rng: np.random.Generator, amount: float, black_fill: bool = False) -> np.ndarray:
    """The camera not square-on: each corner moved by up to ``amount`` of the frame, edges
    mirrored (or black where the picture does not reach, with ``black_fill``)."""
    height, width = frame.shape[:2]
    corners = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    moved = (corners + rng.uniform(-amount, amount, (4, 2)) * (width, height)).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(corners, moved)
    return cv2.warpPerspective(frame.astype(np.float32), matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT if black_fill else cv2.BORDER_REFLECT)


def motion(frame: np.ndarray, rng: np.random.Generator, longest: float) -> np.ndarray:
    """A straight motion streak of up to ``longest`` pixels in a random direction."""
    length = rng.uniform(1, longest)
    size = int(np.ceil(length)) | 1
    kernel = np.zeros((size, size), np.float32)
    direction = rng.uniform(0, np.pi)
    c = size // 2
    dx, dy = np.cos(direction) * length / 2, np.sin(direction) * length / 2
    cv2.line(kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1, cv2.LINE_AA)
    return cv2.filter2D(frame, -1, kernel / kernel.sum())
