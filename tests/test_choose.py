"""Framing and colour chosen by a measurement on the training images (train.choose)."""

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.contract import Contract
from train import choose
from train.folders import load_folder

SHAPES = ("disc", "ring", "square")


def small_object(kind: str, rng: np.random.Generator, width: int = 320, height: int = 240) -> np.ndarray:
    """A dark shape about a tenth of the frame's height, anywhere on a light, unevenly lit backdrop:
    squeezed whole to the input, a ring's hole is a pixel or two; framed, it is plain."""
    yy, xx = np.mgrid[:height, :width]
    radius = height * rng.uniform(0.09, 0.12)
    cy, cx = rng.uniform(radius + 10, height - radius - 10), rng.uniform(radius + 10, width - radius - 10)
    r = np.hypot(yy - cy, xx - cx)
    if kind == "disc":
        mask = r < radius
    elif kind == "ring":
        mask = (r < radius) & (r > 0.55 * radius)
    else:
        mask = (np.abs(yy - cy) < radius * 0.85) & (np.abs(xx - cx) < radius * 0.85)
    backdrop = rng.uniform(170, 220) + 20 * (xx / width - 0.5)
    image = np.where(mask, rng.uniform(20, 60), backdrop) + rng.normal(0, 4, (height, width))
    return np.clip(image, 0, 255).astype(np.uint8)


def write(root: Path, draw, per_class: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for kind in SHAPES:
        (root / kind).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(draw(kind, rng)).save(root / kind / f"{i:02d}.png")
    return root


def tight_crop(kind: str, rng: np.random.Generator) -> np.ndarray:
    """The shape filling the picture, as a cropped data set holds it."""
    big = small_object(kind, rng, 120, 120)
    dark = np.argwhere(big < 100)
    (y0, x0), (y1, x1) = dark.min(0), dark.max(0)
    return big[max(0, y0 - 4):y1 + 5, max(0, x0 - 4):x1 + 5]


def test_small_objects_in_big_frames_are_framed(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="train.choose"):
        data = load_folder(write(tmp_path / "d", small_object))
    scores = {s.name: s.accuracy for s in data.choices}
    assert list(scores) == ["resize gray 64x64", "resize gray 28x28", "object gray 64x64", "object gray 28x28"]
    assert data.contract.preprocessing == "object"
    chosen = f"object gray {data.contract.height}x{data.contract.width}"
    assert scores[chosen] == max(scores.values()) > scores["resize gray 64x64"] + choose.MARGIN
    assert data.describe()["choices"] == {name: round(a, 4) for name, a in scores.items()}
    assert f"-> {chosen}" in caplog.text and "cross-validation" in caplog.text  # the evidence is logged


def test_tight_crops_keep_the_simplest_framing(tmp_path):
    data = load_folder(write(tmp_path / "d", tight_crop))
    assert data.contract.preprocessing == "resize"


def test_a_flag_or_too_few_images_measure_nothing(tmp_path):
    root = write(tmp_path / "d", small_object, per_class=choose.FOLDS + 1)
    assert load_folder(root, preprocess="object").choices == []  # asked for: not measured
    small = load_folder(root)  # fewer than MEASURE_PER_CLASS images a class: the simplest, unmeasured
    assert small.choices == [] and small.contract.preprocessing == "resize"


def test_a_near_tie_keeps_the_first_candidate(monkeypatch):
    labels = np.repeat([0, 1], 20)
    contracts = [Contract(("a", "b"), 8, 8, 1, preprocessing=kind) for kind in ("resize", "object")]
    rng = np.random.default_rng(0)
    prepared = {c: rng.integers(0, 255, (40, 8, 8), np.uint8) for c in contracts}
    accuracy = iter([0.80, 0.80 + choose.MARGIN / 2])
    monkeypatch.setattr(choose, "features", lambda images, contract: images.reshape(len(images), -1))
    monkeypatch.setattr(choose, "ridge_accuracy", lambda x, y, seed: next(accuracy))
    chosen, scores = choose.choose(prepared, labels, seed=0)
    assert chosen is contracts[0] and [s.accuracy for s in scores] == [0.80, 0.80 + choose.MARGIN / 2]


def test_ridge_accuracy_separates_separable_data_and_not_noise():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 30)
    separable = rng.normal(0, 1, (90, 20)) + np.eye(3, 20)[labels] * 4
    assert choose.ridge_accuracy(separable, labels, seed=0) > 0.95
    assert choose.ridge_accuracy(rng.normal(0, 1, (90, 20)), labels, seed=0) < 0.6


@pytest.mark.parametrize("size", [10, 100])
def test_the_sample_is_stratified_and_bounded(size):
    labels = np.repeat([0, 1, 2], [200, 40, 10])
    picked = choose.sample(labels, size, seed=0)
    assert len(picked) <= max(size, 3 * choose.FOLDS) + 3 and len(set(picked)) == len(picked)
    assert set(np.unique(labels[picked])) == {0, 1, 2}
