"""python -m train: float training, QAT fine-tuning, report and plots into --out.

Exit codes: 0 done, 1 training diverged (the loss became NaN or infinite), 2 a usage error,
no valid data, or --out cannot be written (read-only, full disk), 75 another worker of a
multi-worker run was lost (restart every worker), 130 interrupted. A killed or interrupted
run resumes where it stopped when the same command is run again.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from pathlib import Path

from train.data import DataError

# Fashion-MNIST's recipe renders this many of the 55,000 training images into camera frames
# (preprocessing in the loop, train.camera_crops); with camera_mix 0.5 about a ninth of each
# epoch's images are crops (docs/desk.md: the trade-off against the official test set)
CAMERA_FRAMES = 12500


def arch_spec(text: str) -> str:
    from train.model import parse_spec

    try:
        parse_spec(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, not {text}")
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
    from train.augment import PRESETS
    from train.distributed import STRATEGIES
    from train.model import ARCHITECTURES
    from train.config import TrainConfig

    d = TrainConfig()
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
    p.add_argument("--learning-rate", type=learning_rate, default=None,
                   help=f"peak learning rate of the float stage (> 0); default {d.learning_rate:g}, "
                        "with --data DIR from --init")
    p.add_argument("--augment", choices=sorted(PRESETS), default=None,
                   help="augmentation preset: standard (the default: shifts, erasing, flips), camera (+ rotation, "
                        "zoom, gamma, noise), photo (shifts, tilts, zoom, light)")
    p.add_argument("--flip", choices=("auto", "on", "off"), default="auto",
                   help="mirror training images; auto: the preset's choice, with --data DIR on only when "
                        "mirrored images stay recognisable (photos yes, digits no)")
    p.add_argument("--init", choices=("bundled", "scratch"), default=None,
                   help="start from the bundled Fashion-MNIST network's convolutions (--data DIR's "
                        "default), or from random weights (Fashion-MNIST's default)")
    p.add_argument("--camera-frames", type=int, default=None, metavar="N",
                   help=f"Fashion-MNIST: render N training images into camera frames and train on the runtime's "
                        f"crops of them as well (preprocessing in the loop, train.camera_crops); default "
                        f"{CAMERA_FRAMES}, 0: off")
    p.add_argument("--limit", type=int, default=None,
                   help="train on a stratified subset of this many images (quick runs)")
    p.add_argument("--seed", type=seed, default=d.seed, help="0 to 2**32 - 1")
    p.add_argument("--data", default="fashion-mnist", metavar="DIR",
                   help="fashion-mnist (default), or a folder of your own classes: one sub-folder of images "
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
    if args.camera_frames is not None and args.camera_frames < 0:
        p.error("--camera-frames must be >= 0")
    if args.data == "fashion-mnist":
        for name in ("image_size", "color", "preprocess"):
            if getattr(args, name) is not None:
                p.error(f"--{name.replace('_', '-')} is for --data DIR (a folder of your own classes)")
    elif args.data_dir is not None:
        p.error("--data-dir is for Fashion-MNIST; with --data DIR the folder is the data")
    elif args.camera_frames:
        p.error("--camera-frames is for Fashion-MNIST: the camera simulator renders its garments; "
                "photos of your own classes are camera images already")
    if args.image_size is not None and not 8 <= args.image_size <= 512:
        p.error("--image-size must be between 8 and 512")
    return args


def fashion_config(args: argparse.Namespace):
    """Fashion-MNIST's recipe (TrainConfig's defaults and camera crops), with what the flags change."""
    from train.augment import PRESETS
    from train.config import TrainConfig

    d = TrainConfig()
    if args.init == "bundled":
        from train.backbone import check_arch

        check_arch(args.arch)
    augment = PRESETS[args.augment or "standard"]
    if args.flip != "auto":
        augment = dataclasses.replace(augment, flip=args.flip == "on")
    return TrainConfig(arch=args.arch, epochs=args.epochs or d.epochs,
                       qat_epochs=d.qat_epochs if args.qat_epochs is None else args.qat_epochs,
                       batch_size=args.batch_size or d.batch_size, learning_rate=args.learning_rate or d.learning_rate,
                       limit=args.limit, seed=args.seed, augment=augment, init=args.init or d.init,
                       camera_frames=CAMERA_FRAMES if args.camera_frames is None else args.camera_frames)


def folder_config(args: argparse.Namespace, dataset):
    """The recipe chosen from the folder (train.recipe), with what the flags fix."""
    from train.recipe import for_folder

    contract = dataset.contract  # another folder or other options: another run, never resumed
    return for_folder(dataset, epochs=args.epochs, qat_epochs=args.qat_epochs, batch=args.batch_size,
                      learning_rate=args.learning_rate, augment=args.augment, flip=args.flip,
                      init=args.init, arch=args.arch, limit=args.limit, seed=args.seed,
                      data_id=f"{dataset.checksums['files'][:16]}:{contract.color}:{contract.height}:"
                              f"{contract.preprocessing}")


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
    from train import data as fmnist
    from runtime.files import check_writable, write_error
    from train.backbone import BackboneError
    from train.pipeline import run
    from train.trainer import TrainingDiverged

    started = time.time()
    if args.data != "fashion-mnist" and Path(args.data).is_dir():
        data, out = Path(args.data).resolve(), args.out.resolve()
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
        if args.data == "fashion-mnist":
            dataset = fmnist.load(args.data_dir)
            config = fashion_config(args)
        else:
            from train.folders import load_folder

            dataset = load_folder(args.data, image_size=args.image_size, color=args.color,
                                  preprocess=args.preprocess, seed=args.seed)
            config = folder_config(args, dataset)
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
