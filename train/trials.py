"""A search's trials, whoever schedules them (``python -m train.search`` one after another, or Ray Tune:
``train.search_ray``): the candidates drawn, the data they share, one trial's training and the results."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

DEFAULTS = {"learning_rate": 3e-3, "width": 1.0, "dropout": 0.2, "augment": 1.0}  # the shipped recipe
WIDTHS = (0.5, 0.75, 1.0, 1.25, 1.5)


def sample_params(rng: np.random.Generator) -> dict[str, float]:
    return {"learning_rate": float(np.exp(rng.uniform(np.log(1e-3), np.log(1e-2)))),
            "width": float(rng.choice(WIDTHS)),
            "dropout": float(rng.uniform(0.0, 0.4)),
            "augment": float(rng.uniform(0.0, 2.0))}


def augment_config(strength: float):
    """Scale the default augmentation's shift and erasing probability by ``strength``."""
    from train.augment import AugmentConfig

    base = AugmentConfig()
    return dataclasses.replace(base, shift=base.shift * strength,
                               cutout_prob=min(base.cutout_prob * strength, 1.0),
                               cutout=base.cutout if strength > 0 else 0)


def search_splits(dataset, limit: int | None, seed: int):
    """The standard split; only the training part is subsampled (validation stays 5,000).

    The test part is left empty: selection never sees the official test set."""
    from train.config import TrainConfig
    from train.inputs import Splits, make_splits, subsample

    full = make_splits(dataset, TrainConfig(seed=seed))
    idx = np.arange(len(full.y_train))
    if limit:
        idx = subsample(full.y_train, idx, limit, seed)
    return Splits(full.contract, full.x_train[idx], full.y_train[idx], full.x_val, full.y_val,
                  full.x_test[:0], full.y_test[:0])


def candidates(trials: int, seed: int) -> list[dict[str, float]]:
    """Trial 0 is the shipped recipe, the others are seeded samples: every backend runs these."""
    rng = np.random.default_rng(seed)
    return [dict(DEFAULTS)] + [sample_params(rng) for _ in range(trials - 1)]


def budget(args: argparse.Namespace, splits) -> dict:
    return {"trials": args.trials, "epochs": args.epochs, "limit": args.limit, "max_minutes": args.max_minutes,
            "seed": args.seed, "train_images": len(splits.y_train), "validation_images": len(splits.y_val)}


def payload(budget: dict, trials: list[dict], wall_time_s: float, **extra) -> dict:
    """search.json: the budget, the default trial, the best, every trial best first."""
    best = max(trials, key=lambda t: t["val_accuracy"])
    default = next((t for t in trials if t["trial"] == 0), None)
    return {"budget": budget,
            "selection": "best validation accuracy (split from the training set)",
            "wall_time_s": round(wall_time_s, 1), "default": default,
            "best": best, "gain_over_default_pp": None if default is None else
            round(100 * (best["val_accuracy"] - default["val_accuracy"]), 2),
            **extra, "trials": sorted(trials, key=lambda t: -t["val_accuracy"])}


def run_trial(params: dict[str, float], splits, epochs: int, seed: int, work: Path,
              callbacks: list | None = None) -> dict:
    from train.config import TrainConfig
    from train.keras_env import keras
    from train.model import build, count_macs, spec
    from train.trainer import TrainingDiverged, fit

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    arch = spec("edge", width=params["width"], dropout=params["dropout"])
    config = TrainConfig(arch=arch, epochs=epochs, learning_rate=params["learning_rate"], seed=seed,
                         augment=augment_config(params["augment"]))
    model = build(arch, splits.contract.image_shape, len(splits.contract.labels))
    started = time.time()
    try:
        history = fit(model, splits, config, stage=arch, epochs=epochs, peak_lr=config.learning_rate,
                      augment=True, backup_dir=work / "backup", callbacks=callbacks).history
        scores = [v for v in history["val_accuracy"] if v is not None]  # None: undefined (NaN)
        result = {"val_accuracy": max(scores, default=0.0),
                  "final_val_accuracy": history["val_accuracy"][-1] or 0.0}
    except TrainingDiverged as e:  # a failed trial, not a failed search: scored as 0, and why
        result = {"val_accuracy": 0.0, "final_val_accuracy": 0.0, "diverged": str(e)}
    return {"params": params, "arch": arch, "parameters": int(model.count_params()),
            "macs": count_macs(model), **result, "wall_time_s": round(time.time() - started, 1)}
