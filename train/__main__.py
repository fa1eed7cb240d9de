"""python -m train: float training, QAT fine-tuning, report and plots into --out.

Exit codes: 0 done, 1 training diverged (the loss became NaN or infinite), 2 a usage error,
no valid data, or --out cannot be written (read-only, full disk), 75 another worker of a
multi-worker run was lost (restart every worker), 130 interrupted. A killed or interrupted
run resumes where it stopped when the same command is run again.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

from train.data import DataError

# what the presets of --augment do (train.augment.PRESETS)
AUGMENT_HELP = {"standard": "shifts, erasing, flips", "camera": "+ rotation, zoom, gamma, noise",
                "photo": "shifts, tilts, zoom, light"}


def arch_spec(text: str) -> str:
    from train.model import parse_spec

    try:
        parse_spec(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def finite_number(text: str, *, zero: bool = False) -> float:
    """A finite number above 0 (``zero``: from 0), else argparse's error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise argparse.ArgumentTypeError(f"must be a finite number {'from' if zero else 'above'} 0, not {text}")
    return value


def share(text: str) -> float:
    """A number above 0 and at most 1, else argparse's error."""
    value = finite_number(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be at most 1, not {text}")
    return value


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**32 - 1, not {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from train import recipe
    from train.augment import PRESETS
    from train.config import TrainConfig
    from train.datasets import FASHION_MNIST, data_kind
    from train.distributed import STRATEGIES
    from train.model import ARCHITECTURES

    d = TrainConfig.shipped()  # the defaults are the shipped recipe's; a folder's are chosen (train.recipe)
    augment = next(name for name, preset in PRESETS.items() if preset == d.augment)
    presets = ", ".join(f"{name} ({'the default: ' if name == augment else ''}{what})"
                        for name, what in AUGMENT_HELP.items())
    if recipe.AUGMENT != augment:
        presets += f"; with --data DIR {recipe.AUGMENT}"
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    p.add_argument("--arch", default=d.arch, type=arch_spec,
                   help=f"one of {', '.join(ARCHITECTURES)}; builder arguments may follow, "
                        "e.g. edge:width=1.5,dropout=0.3")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"float epochs, at most (early stopping); default {d.epochs}, or from the folder's size")
    p.add_argument("--qat-epochs", type=int, default=None,
                   help=f"default {d.qat_epochs}, or from the folder's size")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"default {d.batch_size}, or from the folder's size")
    p.add_argument("--learning-rate", type=finite_number, default=None,
                   help=f"peak learning rate of the float stage (> 0); default {d.learning_rate:g}, "
                        f"with --data DIR {recipe.LEARNING_RATE:g}")
    p.add_argument("--weight-decay", type=lambda text: finite_number(text, zero=True), default=None,
                   help=f"decoupled weight decay (AdamW; 0: Adam); default {d.weight_decay:g}")
    p.add_argument("--teacher", type=lambda text: str(Path(text).resolve()), default=None, metavar="MODEL",
                   help="distil: mix this trained Keras model's answers (e.g. a larger run's float_model.h5) into "
                        "every training target (train.teacher)")
    p.add_argument("--teacher-weight", type=share, default=None,
                   help=f"the teacher's share of each target, above 0 and at most 1; default {d.teacher_weight:g}")
    p.add_argument("--augment", choices=sorted(PRESETS), default=None,
                   help=f"augmentation preset: {presets}")
    p.add_argument("--flip", choices=("auto", "on", "off"), default="auto",
                   help="mirror training images; auto: the preset's choice, with --data DIR on only when "
                        "mirrored images stay recognisable (photos yes, digits no)")
    p.add_argument("--init", choices=("bundled", "scratch"), default=None,
                   help="start from the bundled Fashion-MNIST network's convolutions (bundled) or from random "
                        f"weights (scratch); default {d.init}, with --data DIR {recipe.INIT} where the "
                        "architecture takes them")
    p.add_argument("--camera-frames", type=int, default=None, metavar="N",
                   help=f"Fashion-MNIST: render N training images into camera frames and train on the runtime's "
                        f"crops of them as well (preprocessing in the loop, train.camera_crops); default "
                        f"{d.camera_frames}, 0: off")
    p.add_argument("--limit", type=int, default=None,
                   help="train on a stratified subset of this many images (quick runs)")
    p.add_argument("--seed", type=seed, default=d.seed, help="0 to 2**32 - 1")
    p.add_argument("--data", default=FASHION_MNIST.name, metavar="DIR",
                   help=f"{FASHION_MNIST.name} (default), or a folder of your own classes: one sub-folder of images "
                        "per class (its name is the label), or train/ [val/] [test/] folders holding them")
    p.add_argument("--image-size", type=int, default=None,
                   help="with --data DIR: the input's side in pixels (default: from the images, 28-64)")
    p.add_argument("--color", choices=("gray", "rgb"), default=None,
                   help="with --data DIR: the input's colour (default: gray when every image is gray, else "
                        "measured with --preprocess: train.choose)")
    p.add_argument("--preprocess", choices=("object", "resize"), default=None,
                   help="with --data DIR: how the runtime frames an image: resize the whole image, or find the "
                        "object and frame it (default: measured on the training images, train.choose)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="directory with the four IDX files (default: search, see README)")
    p.add_argument("--out", type=Path, default=Path("artifacts"))
    p.add_argument("--strategy", choices=STRATEGIES, default="default",
                   help="default: one process; mirrored: tf.distribute over this machine's devices; multi-worker: "
                        "one process per worker, the cluster from TF_CONFIG, --out a folder every worker shares "
                        "(docs/distributed.md)")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if (args.qat_epochs or 0) < 0 or (args.limit is not None and args.limit < 10):
        p.error("--qat-epochs must be >= 0 and --limit >= 10")
    if args.teacher_weight is not None and not args.teacher:
        p.error("--teacher-weight is the share of --teacher's answers: give --teacher MODEL too")
    if args.camera_frames is not None and args.camera_frames < 0:
        p.error("--camera-frames must be >= 0")
    kind = data_kind(args.data)
    for name in ("image_size", "color", "preprocess"):
        if getattr(args, name) is not None and name not in kind.options:
            p.error(f"--{name.replace('_', '-')} is for --data DIR (a folder of your own classes)")
    if args.data_dir is not None and "data_dir" not in kind.options:
        p.error("--data-dir is for Fashion-MNIST; with --data DIR the folder is the data")
    elif args.camera_frames and not kind.camera_crops:
        p.error("--camera-frames is for Fashion-MNIST: the camera simulator renders its garments; "
                "photos of your own classes are camera images already")
    if args.image_size is not None and not 8 <= args.image_size <= 512:
        p.error("--image-size must be between 8 and 512")
    return args


def recipe_flags(args: argparse.Namespace) -> dict:
    """What the flags change in the recipe (``train.datasets.recipe``; None: the recipe's choice)."""
    return dict(arch=args.arch, epochs=args.epochs, qat_epochs=args.qat_epochs, batch_size=args.batch_size,
                learning_rate=args.learning_rate, weight_decay=args.weight_decay, teacher=args.teacher,
                teacher_weight=args.teacher_weight, augment=args.augment,
                flip=args.flip, init=args.init, limit=args.limit, seed=args.seed, camera_frames=args.camera_frames)


def open_data(args: argparse.Namespace):
    """The data ``--data`` names, and the configuration to train it with."""
    from train.datasets import open_dataset, recipe

    dataset = open_dataset(args.data, seed=args.seed, data_dir=args.data_dir, image_size=args.image_size,
                           color=args.color, preprocess=args.preprocess)
    config = recipe(dataset, **recipe_flags(args))
    if config.teacher:  # a teacher that cannot teach is refused now, not after the data and a stage
        from train.teacher import load_teacher

        load_teacher(config.teacher, dataset.contract)
    return dataset, config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # heavy imports after argument parsing, so --help is instant
    from train.distributed import PEER_LOST, ClusterError, make_cluster, peer_lost_errors

    try:
        cluster = make_cluster(args.strategy)  # a multi-worker server starts before any other TensorFlow work
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    prefix = f"[worker {cluster.index}/{cluster.workers}] " if cluster.workers > 1 else ""
    logging.basicConfig(level=logging.INFO, format=f"{prefix}%(message)s")
    from runtime.files import check_writable, write_error
    from train.backbone import BackboneError
    from train.datasets import data_kind
    from train.pipeline import run
    from train.trainer import TrainingDiverged

    started = time.time()
    folder = data_kind(args.data).folder(args.data)
    if folder is not None:
        data, out = folder.resolve(), args.out.resolve()
        if out == data or data in out.parents:  # the run's own plots would become training images
            print(f"error: --out {args.out} is inside --data {args.data}: put the run's output "
                  "outside the data folder", file=sys.stderr)
            return 2
    try:
        check_writable(args.out)  # before the data and minutes of training, not after
    except OSError as e:
        print(f"error: {write_error(e, args.out)}", file=sys.stderr)
        return 2
    try:
        dataset, config = open_data(args)
    except (DataError, ValueError) as e:  # ValueError: FolderError, BackboneError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted while reading the data: nothing was trained or written", file=sys.stderr)
        return 130
    try:
        report = run(config, dataset, args.out, cluster)
    except peer_lost_errors() as e:
        if cluster.workers == 1:
            raise
        print(f"error: {prefix}lost contact with another worker ({type(e).__name__}): restart every worker with "
              f"the same command and TF_CONFIG; they resume from the last finished epoch in {args.out / 'backup'}",
              file=sys.stderr)
        return PEER_LOST
    except BackboneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to resume from the last "
              f"finished epoch (checkpoints in {args.out / 'backup'})", file=sys.stderr)
        return 130
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. the disk filled up: what was written before is intact
        print(f"error: {write_error(e, args.out)}; files already in {args.out} are unchanged, and the "
              "same command resumes from the last finished epoch", file=sys.stderr)
        return 2
    if report is None:  # a worker, not the chief: the chief evaluates and writes the results
        print(f"{prefix}done in {time.time() - started:.0f} s; the chief (worker 0) writes {args.out}/")
        return 0
    print(f"\n{'model':<8}{'test accuracy':>15}{'test loss':>12}")
    for stage in ("float", "qat"):
        print(f"{stage:<8}{report[stage]['test_accuracy']:>15.4f}{report[stage]['test_loss']:>12.4f}")
    print(f"wrote {args.out}/ in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
