"""python -m train: float training, QAT fine-tuning, report and plots into --out."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from train.data import DataError


def arch_spec(text: str) -> str:
    from train.model import parse_spec

    try:
        parse_spec(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from train.augment import PRESETS
    from train.model import ARCHITECTURES
    from train.trainer import TrainConfig

    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    p.add_argument("--arch", default=d.arch, type=arch_spec,
                   help=f"one of {', '.join(ARCHITECTURES)}; builder arguments may follow, "
                        "e.g. edge:width=1.5,dropout=0.3")
    p.add_argument("--epochs", type=int, default=d.epochs, help="float epochs (max; early stopping)")
    p.add_argument("--qat-epochs", type=int, default=d.qat_epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--augment", choices=sorted(PRESETS), default="standard",
                   help="augmentation preset (camera: + rotation, zoom, gamma, noise)")
    p.add_argument("--limit", type=int, default=None,
                   help="train on a stratified subset of this many images (quick runs)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--data-dir", type=Path, default=None,
                   help="directory with the four IDX files (default: search, see README)")
    p.add_argument("--out", type=Path, default=Path("artifacts"))
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.qat_epochs < 0 or (args.limit is not None and args.limit < 10):
        p.error("--qat-epochs must be >= 0 and --limit >= 10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # heavy imports after argument parsing, so --help is instant
    from train import data as fmnist
    from train.pipeline import run
    from train.augment import PRESETS
    from train.trainer import TrainConfig

    config = TrainConfig(arch=args.arch, epochs=args.epochs, qat_epochs=args.qat_epochs,
                         batch_size=args.batch_size, learning_rate=args.learning_rate,
                         limit=args.limit, seed=args.seed, augment=PRESETS[args.augment])
    started = time.time()
    try:
        dataset = fmnist.load(args.data_dir)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        report = run(config, dataset, args.out)
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to resume from the last "
              f"finished epoch (checkpoints in {args.out / 'backup'})", file=sys.stderr)
        return 130
    print(f"\n{'model':<8}{'test accuracy':>15}{'test loss':>12}")
    for stage in ("float", "qat"):
        print(f"{stage:<8}{report[stage]['test_accuracy']:>15.4f}{report[stage]['test_loss']:>12.4f}")
    print(f"wrote {args.out}/ in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
