"""python -m train.camera_eval: accuracy on camera-like frames rendered from Fashion-MNIST.

Each image is rendered into a 640x480 colour frame (runtime.camera_sim: light tinted
backdrop, lighting gradient, 40-80% of the frame height, off centre, rotated up to 15°,
blur, noise; the hard variant is smaller, blurrier and noisier) with a fixed seed, then
classified through ``Predictor.predict(frame)``. The naive baseline resizes the whole
frame to 28x28 in grayscale, as a notebook would. Frames from the *test* set are for
reporting; tune on ``--split train`` only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from runtime import Contract, Predictor, camera_sim
from runtime.files import write_json
from runtime.preprocess import resize, to_gray
from train import data as fmnist
from train.report import confusion_matrix, plot_confusion

VARIANTS = {"standard": camera_sim.STANDARD, "hard": camera_sim.HARD, "desk": camera_sim.DESK}


def sample(dataset: fmnist.FashionMNIST, split: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of ``split``, equal per class, seeded."""
    images, labels = ((dataset.test_images, dataset.test_labels) if split == "test"
                      else (dataset.train_images, dataset.train_labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    idx = np.concatenate([rng.choice(np.flatnonzero(labels == c), n // len(classes), replace=False)
                          for c in classes])
    return images[idx], labels[idx]


def naive(frame: np.ndarray, contract: Contract) -> np.ndarray:
    """The notebook way: grayscale, squash the whole frame to the input size, no object finding."""
    return resize(to_gray(frame), contract.width, contract.height)


def evaluate(predictor: Predictor, images: np.ndarray, labels: np.ndarray, scene: camera_sim.Scene,
             seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ours, baseline, found = [], [], 0
    for image in images:
        frame = camera_sim.render(image, rng, scene)
        prediction = predictor.predict(frame)
        ours.append(prediction.index)
        found += prediction.object_found
        baseline.append(predictor.predict(naive(frame, predictor.contract)).index)
    ours, baseline = np.array(ours), np.array(baseline)
    return {"accuracy": float((ours == labels).mean()),
            "naive_resize_accuracy": float((baseline == labels).mean()),
            "object_found": found / len(images),
            "confusion_matrix": confusion_matrix(labels, ours, len(predictor.labels)).tolist()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.camera_eval", description=__doc__)
    p.add_argument("--model", type=Path, default=None, help="default: the bundled int8 model")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--n", type=int, default=2000, help="frames per variant (equal per class)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("artifacts"))
    args = p.parse_args(argv)
    try:
        dataset = fmnist.load(args.data_dir)
    except fmnist.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    predictor = Predictor(args.model, num_threads=1)
    images, labels = sample(dataset, args.split, args.n, args.seed)
    original = float(np.mean([p.index for p in predictor.predict_batch(images)] == labels))
    results = {"model": str(predictor.model_path), "split": args.split, "frames": len(images),
               "seed": args.seed, "original_28x28_accuracy": original}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, scene in VARIANTS.items():
        started = time.time()
        results[name] = evaluate(predictor, images, labels, scene, args.seed)
        plot_confusion(np.array(results[name]["confusion_matrix"]), predictor.labels,
                       args.out / f"camera_confusion_{args.split}_{name}.png",
                       f"camera-domain ({name}, {args.split}) accuracy {results[name]['accuracy']:.2%}")
        print(f"{name:<9} accuracy {results[name]['accuracy']:.2%}  naive resize "
              f"{results[name]['naive_resize_accuracy']:.2%}  object found {results[name]['object_found']:.1%}"
              f"  ({time.time() - started:.0f} s)")
    print(f"same images as 28x28 arrays: {original:.2%}")
    out = args.out / f"camera_eval_{args.split}.json"
    write_json(out, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
