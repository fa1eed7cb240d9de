"""Preprocessing in the loop: training images as the runtime will feed them to the model.

A webcam never shows the model a Fashion-MNIST image. ``Predictor.predict(frame)`` finds the
garment in a frame, cuts it out and frames it like the dataset (``runtime.preprocess``), and
what comes out is tilted (a shoe; a symmetric garment less), framed a little looser or
tighter, blurred, with a shadow's halo or the backdrop's texture left around it. So some
training images are shown to the model that way: each is

1. rendered into a camera frame by ``simulator.camera_sim`` (a scene drawn per image from
   ``SCENES``: plain backdrops and desks with every kind of clutter), then
2. cut out again by the runtime's own ``runtime.preprocess.prepare``,

once, before training (``crops``); in every epoch each rendered image is shown as its crop
with a chance of ``TrainConfig.camera_mix``, else as itself (``train.trainer.datasets``). The
crops are kept in ``--out`` (``CACHE``), so a resumed run does not render them again.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from runtime import preprocess

try:
    from simulator import camera_sim
except ImportError as e:  # installed from the wheel: the simulator stays in the source tree
    raise ImportError("camera crops are rendered by the desk simulator (simulator/), which comes with the source "
                      "tree, not the wheel: train from a clone of the repository, or with --camera-frames 0") from e
from runtime.contract import Contract
from runtime.files import atomic_path

log = logging.getLogger(__name__)

CACHE = "camera_crops.npz"
# the scenes camera_eval measured when the recipe was made, drawn with equal chance: plain
# backdrops as often as each kind of desk, so the plain frames' crops are learned as well as the
# cluttered ones (the later "angled", "warped" and "sleeve" desks are left out: the recipe's crops
# stay as measured)
SCENES = tuple(camera_sim.SCENES[name] for name in ("standard", "hard", "desk", "wood", "fabric", "keyboard",
                                                     "lamps", "phone", "cluttered"))
# Frames at half the webcam's 640x480: a quarter of the pixels to render, and the garment still
# spans 96-192 pixels, cut down to 28 by the preprocessing.
FRAME = (320, 240)
CHUNK = 500  # images per task; each chunk has its own seed, so the crops do not depend on the workers


def check_contract(contract: Contract) -> None:
    """Camera crops are Fashion-MNIST-like: a one-channel image that the ``object`` kind frames."""
    if contract.preprocessing != "object" or contract.channels != 1:
        raise ValueError(f"camera crops render a grayscale garment and cut it out with the 'object' "
                         f"preprocessing; this data set is {contract.color} with '{contract.preprocessing}': "
                         f"train it without camera crops (camera_frames=0)")


def render_chunk(images: np.ndarray, contract: Contract, seed: tuple[int, int]) -> np.ndarray:
    """The runtime's uint8 crop of each image, rendered into a frame of a scene drawn from ``SCENES``."""
    import cv2

    cv2.setNumThreads(1)  # the workers are the parallelism
    rng = np.random.default_rng(seed)
    out = np.empty((len(images), contract.height, contract.width), np.uint8)
    for i, image in enumerate(images):
        frame = camera_sim.render(image, rng, SCENES[rng.integers(len(SCENES))], FRAME)
        crop = preprocess.prepare(frame, contract).image[..., 0]  # zeros if nothing was found: as the runtime
        out[i] = np.round(np.clip(crop, 0, 1) * 255).astype(np.uint8)
    return out


def cache_key(images: np.ndarray, contract: Contract, seed: int) -> str:
    """What the crops depend on: the images, the seed, the input, and the renderer's and the
    preprocessing's code (a change to either renders them again)."""
    digest = hashlib.sha256()
    for part in (images.tobytes(), repr((seed, SCENES, FRAME, CHUNK, contract.image_shape)).encode(),
                 inspect.getsource(camera_sim).encode(),
                 *(module.read_bytes() for module in sorted(Path(preprocess.__file__).parent.glob("*.py")))):
        digest.update(part)
    return digest.hexdigest()[:32]


def crops(images: np.ndarray, contract: Contract, seed: int, cache_dir: Path | None = None,
          workers: int | None = None) -> np.ndarray:
    """uint8 (N, H, W): each of ``images`` (uint8 (N, 28, 28)) as the runtime crops it from a
    rendered camera frame. Read from ``cache_dir/CACHE`` when it holds these crops."""
    check_contract(contract)
    if not len(images):
        return np.empty((0, contract.height, contract.width), np.uint8)
    key = cache_key(images, contract, seed)
    cache = None if cache_dir is None else Path(cache_dir) / CACHE
    if cache is not None and cache.exists():
        try:
            with np.load(cache) as saved:
                if str(saved["key"]) == key:
                    log.info("camera crops: %d read from %s", len(images), cache)
                    return saved["crops"]
        except (OSError, ValueError, KeyError):
            pass  # damaged or another format: render again
    started = time.time()
    workers = workers or min(os.cpu_count() or 1, max(1, len(images) // CHUNK))
    chunks = range(0, len(images), CHUNK)
    log.info("camera crops: rendering %d training images into camera frames and cutting them out with "
             "the runtime's preprocessing (%d processes)", len(images), workers)
    tasks = list(zip(*[(images[s:s + CHUNK], contract, (seed, s)) for s in chunks]))

    def render_all(mapper) -> list[np.ndarray]:
        parts = []
        with tqdm(total=len(images), unit="image", desc="camera crops", mininterval=5) as bar:
            for part in mapper(render_chunk, *tasks):
                parts.append(part)
                bar.update(len(part))
        return parts

    if workers == 1:
        parts = render_all(map)
    else:  # spawned, not forked: TensorFlow's threads do not survive a fork
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = render_all(pool.map)
    result = np.concatenate(parts)
    log.info("camera crops: %d in %.0f s", len(result), time.time() - started)
    if cache is not None:
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, key=key, crops=result)
    return result


def camera_views(images: np.ndarray, contract: Contract, count: int, seed: int,
                 cache_dir: Path | None = None) -> np.ndarray:
    """``images`` with ``count`` of them (a seeded choice; all if there are fewer) replaced by
    their camera crops."""
    chosen = np.sort(np.random.default_rng(seed).permutation(len(images))[:count])
    views = images.copy()
    views[chosen] = crops(images[chosen], contract, seed, cache_dir)
    return views
