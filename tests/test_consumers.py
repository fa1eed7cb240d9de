"""Our files in their real consumers: tflite-support's metadata reader and MediaPipe Tasks' ImageClassifier,
run in their own environment by benchmarks/consumers.py (`make consumers` builds .venv-consumers: they cannot
share TensorFlow's; `make test` sets FASHION_EDGE_CONSUMERS to its python, and then these tests must run)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.formats import exported as exported_files

ROOT = Path(__file__).parents[1]
CONSUMERS = Path(os.environ.get("FASHION_EDGE_CONSUMERS", ROOT / ".venv-consumers/bin/python"))
MIN_AGREEMENT = 0.995  # issue 32's bar: MediaPipe's top-1 against our Predictor on the int8 TFLite

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    "FASHION_EDGE_CONSUMERS" not in os.environ and not CONSUMERS.is_file(),
    reason="the consumers' environment is missing: make consumers")]


def consumer(*args) -> dict:
    done = subprocess.run([str(CONSUMERS), str(ROOT / "benchmarks/consumers.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def mediapipe_agreement(model_dir: Path, images: np.ndarray, tmp_path: Path) -> tuple[float, list[str]]:
    """MediaPipe on the RGB images vs our Predictor on the int8 TFLite (gray models get the gray images)."""
    from runtime import Predictor

    predictor = Predictor(exported_files(model_dir)["tflite-int8"])
    gray = predictor.contract.channels == 1
    ours = [p.label for p in predictor.predict_batch(images[..., 0] if gray else images[..., ::-1])]  # BGR
    np.save(tmp_path / "images.npy", images)
    theirs = consumer("mediapipe", exported_files(model_dir)["mediapipe"], tmp_path / "images.npy")["top1"]
    return float(np.mean([a == b for a, b in zip(theirs, ours)])), theirs


def test_metadata_readers_find_labels_and_normalization(exported):
    from train.data import CLASS_NAMES

    out, _ = exported
    for name, color, channels in (("tflite-int8", "GRAYSCALE", 1), ("mediapipe", "RGB", 3)):
        found = consumer("metadata", exported_files(out)[name])
        assert found["labels"] == list(CLASS_NAMES), name
        assert found["color_space"] == color and found["mean"] == [0.0] * channels
        assert found["std"] == [255.0] * channels  # the input's value is pixel / 255
        assert set(found["files"]) == {"labels.txt", "fashion_edge.json"}


def test_mediapipe_classifies_the_official_images_with_our_labels(exported, tmp_path):
    from train.data import CLASS_NAMES, load

    out, _ = exported
    data = load(allow_download=False)
    rgb = np.repeat(data.test_images[:1000, :, :, None], 3, axis=3)
    agreement, top1 = mediapipe_agreement(out, rgb, tmp_path)
    assert agreement >= MIN_AGREEMENT
    accuracy = np.mean([CLASS_NAMES.index(label) == truth for label, truth in zip(top1, data.test_labels)])
    assert accuracy > 0.6  # the quick run's model: far above chance (0.1)


def test_a_colour_model_from_a_folder_in_mediapipe(tmp_path):
    """`python -m train --data DIR --color rgb`, exported: MediaPipe reads its labels and agrees."""
    rng = np.random.default_rng(0)
    colours = {"blue": (40, 60, 200), "green": (40, 180, 60), "red": (210, 50, 40)}
    for label, colour in colours.items():
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(40):
            image = rng.normal(90, 20, (40, 40, 3))
            y, x = rng.integers(6, 18, 2)
            image[y:y + 16, x:x + 16] = np.array(colour) + rng.normal(0, 15, 3)
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(tmp_path / "data" / label / f"{i}.png")
    out, env = tmp_path / "out", {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # from scratch: colour is the cue here, which the bundled network's gray convolutions learn slowly
    for command in (["train", "--data", tmp_path / "data", "--color", "rgb", "--preprocess", "resize",
                     "--image-size", "32", "--init", "scratch", "--epochs", "6", "--batch-size", "8",
                     "--qat-epochs", "1", "--out", out],
                    ["export", "--model", out / "qat_model.h5", "--calibration-size", "30"]):
        done = subprocess.run([sys.executable, "-m", *map(str, command)], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert consumer("metadata", exported_files(out)["mediapipe"])["labels"] == sorted(colours)
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((32, 32), Image.BILINEAR))
                       for p in sorted((tmp_path / "data").glob("*/*.png"))])
    agreement, top1 = mediapipe_agreement(out, images, tmp_path)
    assert agreement == 1.0 and set(top1) <= set(colours)
