"""benchmarks/baselines.py: the classic and Keras-tutorial baselines own_classes.py sets our model beside."""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import baselines  # noqa: E402

SHAPES = ("circle", "square", "bar")
SIDE = 32


def shape_image(shape: str, rng: np.random.Generator) -> Image.Image:
    """A bright ``shape`` of random size and place on a noisy dark background."""
    noise = rng.integers(0, 60, (SIDE, SIDE), dtype=np.uint8)
    image = Image.fromarray(noise)
    size, x, y = int(rng.integers(12, 18)), int(rng.integers(2, 8)), int(rng.integers(2, 8))
    box = {"circle": (x, y, x + size, y + size), "square": (x, y, x + size, y + size),
           "bar": (x, y + size // 2 - 2, x + size + 6, y + size // 2 + 2)}[shape]
    draw = ImageDraw.Draw(image)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=int(rng.integers(180, 256)))
    return image


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """Three separable classes: 20 training and 8 test images of each, train/ + test/ layout."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for split, count in (("train", 20), ("test", 8)):
        for shape in SHAPES:
            (root / split / shape).mkdir(parents=True)
            for i in range(count):
                shape_image(shape, rng).save(root / split / shape / f"{i:02d}.png")
    return root


def test_classic_baselines_learn_separable_shapes_from_the_recorded_crops(shapes):
    result = baselines.classic(shapes, {"image_size": 28, "color": "gray", "preprocess": "resize"})
    assert result["image_shape"] == [28, 28, 1]  # the recorded size, not the folder's 32
    assert result["train_images"] == 60 and result["test_images"] == 24 and result["unreadable"] == 0
    for name in ("svm", "logistic"):
        assert result[name]["accuracy"] >= 0.8, result[name]  # chance: 1/3
        assert set(result[name]["per_class"]) == set(SHAPES) and result[name]["fit_s"] >= 0
        assert 0 <= result[name]["cv_accuracy"] <= 1


def test_keras_tutorial_keeps_to_its_budget(shapes):
    budget = 10.0
    result = baselines.keras_tutorial(shapes, budget, image_size=64)
    assert result["failed"] is None and result["epochs"] >= 1
    assert result["train_s"] <= budget + 4  # an epoch starts only while the last one's time still fits
    assert result["test_images"] == 24 and set(result["per_class"]) == set(SHAPES)
    assert 0 <= result["accuracy"] <= 1 and 1 <= result["best_epoch"] <= result["epochs"]


def test_keras_tutorial_reports_a_file_it_cannot_read(shapes, tmp_path):
    messy = tmp_path / "messy"
    shutil.copytree(shapes, messy)
    (messy / "train" / "square" / "cut short.png").write_bytes(b"<html>404</html>")
    result = baselines.keras_tutorial(messy, 5.0, image_size=32)
    assert result["accuracy"] is None, result
    assert result["failed"].startswith("InvalidArgumentError: Unknown image file format"), result
