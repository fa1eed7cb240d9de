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
import logging
import sys
import tempfile
import time
from pathlib import Path

from train.trials import budget, candidates, payload, run_trial, search_splits

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
