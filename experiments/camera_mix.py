"""python -m experiments.camera_mix: how much of each epoch should be camera crops?

Fine-tunes one float model trained without them (``python -m train --camera-frames 0``) for a
few epochs with each share of camera crops (``train.camera_crops``: training images rendered
into camera frames and cut out by the runtime's preprocessing), the same way each time
(``train.trainer.fit``: warm-up and cosine, the standard augmentation). Share 0 is the same
fine-tuning without crops, the control. Each result is measured on the validation images,
which no run trains on: as 28x28 arrays, and rendered into 640x480 frames of the standard,
desk and cluttered scenes (``runtime.camera_sim``, as ``train.camera_eval`` does) and framed
by ``runtime.preprocess.prepare``; and on the official test set. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
SETS = ("standard", "desk", "cluttered")


def validation_images(dataset, config, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` of the validation images of ``train.trainer.make_splits`` (the same split, never
    trained on) and their labels, equal per class, seeded."""
    from train import data as fmnist
    from train.camera_eval import equal_per_class

    _, val_idx = fmnist.stratified_split(dataset.train_labels, config.validation_fraction, config.seed, min_each=1)
    return equal_per_class(dataset.train_images[val_idx], dataset.train_labels[val_idx], n, seed)


def validation_frames(dataset, config, frames: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{set: (model inputs, labels)}: ``frames`` validation images (equal per class), rendered
    into each set's frames and framed by the runtime's preprocessing; "arrays": the images."""
    from runtime import camera_sim
    from runtime.preprocess import prepare

    images, labels = validation_images(dataset, config, frames, seed)
    contract = dataset.contract
    result = {"arrays": (contract.model_input(images), labels)}
    for name in SETS:
        render = np.random.default_rng(seed)
        crops = np.stack([prepare(camera_sim.render(image, render, camera_sim.SCENES[name]), contract).image
                          for image in images])
        result[name] = (contract.from_unit(crops), labels)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.camera_mix", description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="a float_model.h5 trained with --camera-frames 0")
    p.add_argument("--mixes", default="0,0.25,0.5", help="shares of each epoch shown as camera crops")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--frames", type=int, default=500, help="validation frames per set (equal per class)")
    p.add_argument("--limit", type=int, default=None, help="fine-tune on a stratified subset (quick runs)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--out", type=Path, default=Path("artifacts/camera_mix"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from runtime.files import write_json
    from train import data as fmnist
    from train.keras_env import keras
    from train.trainer import TrainConfig, fit, make_splits

    dataset = fmnist.load()
    mixes = [float(m) for m in args.mixes.split(",")]
    # every training image rendered once: a share s of an epoch is camera_mix = s
    config = TrainConfig(camera_frames=len(dataset.train_labels), limit=args.limit)
    splits = make_splits(dataset, config, args.out)
    frames = validation_frames(dataset, config, args.frames, args.seed)
    frames["official test"] = (splits.x_test, splits.y_test)
    rows = []
    for mix in mixes:
        keras.backend.clear_session()
        model = keras.models.load_model(args.model, compile=False)
        config.camera_mix = mix
        backup = args.out / f"backup-{mix}"
        shutil.rmtree(backup, ignore_errors=True)
        fit(model, splits, config, stage=f"crops {mix:.0%}", epochs=args.epochs, peak_lr=args.learning_rate,
            augment=True, backup_dir=backup)
        shutil.rmtree(backup, ignore_errors=True)
        row = {"camera_share": mix}
        for name, (x, y) in frames.items():
            row[name] = float((model.predict(x, batch_size=512, verbose=0).argmax(1) == y).mean())
        rows.append(row)
        log.info("%s", row)
    names = list(frames)
    print(f"| share of crops | validation {' | validation '.join(names[:-1])} | {names[-1]} |")
    print("| --- |" + " --- |" * len(names))
    for row in rows:
        print(f"| {row['camera_share'] * 100:g}% | " + " | ".join(f"{row[n]:.2%}" for n in names) + " |")
    write_json(args.out / "camera_mix.json", {"model": str(args.model), "epochs": args.epochs,
                                              "learning_rate": args.learning_rate, "frames": args.frames,
                                              "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
