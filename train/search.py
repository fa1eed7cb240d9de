"""python -m train.search: a seeded random search over the default architecture's recipe.

Searches the peak learning rate, the width (a multiplier on every conv and the dense
layer), dropout and augmentation strength (1 = the default: ±2 px shifts and 8x8
erasing on 30% of images; 0 = flips only; 2 = ±4 px on 60%). Trial 0 is the current
default, so every other trial is judged against it under the same budget. Each trial
trains float only (QAT follows the float model closely; see the README's tables), from
the same seed, and is scored by its best accuracy on the validation split (5,000 images
carved out of the training set). The official test set is never loaded.

``--backend ray`` runs the same trials under Ray Tune (ASHA stops weak trials early), on
this machine or on a Ray cluster (``--address``): see train/search_ray.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=10, help="trials, the default recipe included")
    p.add_argument("--epochs", type=int, default=5, help="float epochs per trial")
    p.add_argument("--limit", type=int, default=20000, help="training images per trial (0: all)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="start no new trial after this many minutes")
    p.add_argument("--seed", type=int, default=42, help="seeds both the sampling and the training")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("artifacts/search.json"))
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: one trial after another in this process; ray: Ray Tune with ASHA early stopping, "
                        "each trial its own process (pip install .[distributed])")
    p.add_argument("--address", default=None,
                   help="with --backend ray: a running Ray cluster (e.g. HEAD:6379, or auto); default: start "
                        "Ray on this machine")
    p.add_argument("--cpus-per-trial", type=int, default=1,
                   help="with --backend ray: each trial's CPUs and TensorFlow threads")
    args = p.parse_args(argv)
    if args.trials < 1 or args.epochs < 1:
        p.error("--trials and --epochs must be at least 1")
    if args.backend == "local" and args.address is not None:
        p.error("--address is for --backend ray")
    if args.cpus_per_trial < 1:
        p.error("--cpus-per-trial must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.backend == "ray":
        try:
            from train.search_ray import main as ray_main
        except ImportError as e:
            print(f"error: --backend ray needs Ray Tune ({e}): pip install '.[distributed]'", file=sys.stderr)
            return 2
        return ray_main(args)
    from train import data as fmnist
    from runtime.files import write_json

    try:
        dataset = fmnist.load(args.data_dir)
    except fmnist.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    splits = search_splits(dataset, args.limit, args.seed)
    started, trials = time.time(), []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for i, params in enumerate(candidates(args.trials, args.seed)):
        if args.max_minutes and time.time() - started > 60 * args.max_minutes:
            print(f"time budget reached: {i} of {args.trials} trials run")
            break
        with tempfile.TemporaryDirectory() as work:
            trial = {"trial": i, **run_trial(params, splits, args.epochs, args.seed, Path(work))}
        trials.append(trial)
        print(f"trial {i}: val {trial['val_accuracy']:.4f}  {trial['arch']}  "
              f"lr {params['learning_rate']:.2e}  augment {params['augment']:.2f}  "
              f"{trial['wall_time_s']:.0f} s", flush=True)
        result = payload(budget(args, splits), trials, time.time() - started)
        write_json(args.out, result)  # after every trial: a killed search keeps what it found
    best = result["best"]
    print(f"\nbest of {len(trials)}: trial {best['trial']} val {best['val_accuracy']:.4f} "
          f"({result['gain_over_default_pp']:+.2f} pp over the default recipe) {best['params']}")
    print(f"wrote {args.out} in {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
