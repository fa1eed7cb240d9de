"""Your own classes: a folder of images, one sub-folder per class, as a training data set.

Two layouts are read::

    DIR/cat/*.jpg, DIR/dog/*.png, ...            one sub-folder per class (names = labels)
    DIR/train/cat/..., [DIR/val/cat/...], [DIR/test/cat/...]   ready-made splits

Images are read by the runtime's one reader (``runtime.images``: PNG, JPEG, BMP, WebP of any
size up to its limits; gray, colour, palette, CMYK, 16-bit, transparency on white, turned
upright by its EXIF orientation), exactly as the HTTP API and ``python -m runtime`` read the
same file, so training and serving see the same pixels. Hidden files and
folders are skipped silently, an operating system's folders (``__MACOSX``) with a warning;
files that cannot be read as images are skipped and counted in one warning, and so are links
out of the folder, FIFOs and devices (never opened) and files over
``runtime.images.MAX_BYTES`` (never read). A class folder's name is its label by the runtime's own rule
(``runtime.collect.check_label``, what the server and the camera demo collect into): a name
it refuses is an error naming the folder. Every image then goes through the runtime's own
``runtime.preprocess.prepare``, so training sees exactly what the runtime feeds the model; how it
frames them (``resize`` or ``object``), in which colour and at which input size is measured on
the training images unless given (``train.choose``).

Without ``val/`` the trainer carves a seeded, stratified validation split from train
(``train.trainer.make_splits``); without ``test/`` the report's "test" images are those
validation images (``test_is_validation``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.collect import SPLIT_NAMES, check_label
from runtime.contract import Contract
from runtime.images import decode, read_file
from runtime.preprocess import prepare
from train import choose
from train.choose import Score
from train.folder_files import files_under, log_junk_dirs, nfc, resolved, visible_dirs

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MIN_SIZE, MAX_SIZE = 28, 64  # the chosen input size is clamped to this range...
SIZE_STEP = 4  # ...and a multiple of this (two poolings divide it evenly)
COLORS = {"gray": 1, "rgb": 3}
VALIDATION_FRACTION = 1 / 12  # TrainConfig's default: the carve-out when there is no val/
CACHE_BYTES = 512 << 20  # decoded images kept between the two passes; beyond: decoded again
SHOW_SKIPPED = 5  # how many skipped files the warning names
MEASURE_PER_CLASS = 10  # training images per class below which framing, colour and size are not measured


class FolderError(ValueError):
    """The folder cannot be a data set; the message says what to add or fix."""


@dataclass
class ImageFolder:
    """A folder data set, with the interface of ``train.data.FashionMNIST`` the trainer uses."""
    train_images: np.ndarray  # (N, H, W) or (N, H, W, 3) uint8, prepared for the model
    train_labels: np.ndarray  # (N,) uint8 (int32 beyond 256 classes: ``Contract.label_dtype``)
    test_images: np.ndarray  # test/ when there is one, else the validation images
    test_labels: np.ndarray
    contract: Contract
    source: Path
    val_images: np.ndarray | None = None  # val/ (None: the trainer carves it from train)
    val_labels: np.ndarray | None = None
    test_is_validation: bool = False
    seed: int = 42
    validation_fraction: float = VALIDATION_FRACTION
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> label -> images
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    checksums: dict[str, str] = field(default_factory=dict)
    kind: str = "folder"
    choices: list[Score] = field(default_factory=list)  # the candidates measured (train.choose), if any

    def describe(self) -> dict:
        """The report's "data": enough to load the same data again (``load_recorded``)."""
        return {"kind": self.kind, "source": str(self.source), "image_size": self.contract.height,
                "color": "gray" if self.contract.channels == 1 else "rgb",
                "preprocess": self.contract.preprocessing, "seed": self.seed,
                "validation_fraction": self.validation_fraction,
                "test_is_validation": self.test_is_validation,
                "labels": list(self.contract.labels), "counts": self.counts,
                "skipped": len(self.skipped), "sha256": self.checksums,
                "choices": {s.name: round(s.accuracy, 4) for s in self.choices}}


def is_gray(array: np.ndarray) -> bool:
    return array.ndim == 2 or bool((array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all())


@dataclass
class Found:
    """One readable image of the first pass."""
    path: Path
    label: int
    short_side: int
    gray: bool
    pixels: np.ndarray | None  # kept while the cache has room


def choose_size(short_sides: list[int]) -> int:
    """The median shorter side, clamped to [MIN_SIZE, MAX_SIZE], a multiple of SIZE_STEP: the input size to
    measure (``train.choose``) beside MIN_SIZE, the bundled network's own."""
    median = float(np.median(short_sides))
    clamped = min(max(median, MIN_SIZE), MAX_SIZE)
    return int(min(max(SIZE_STEP * int(clamped / SIZE_STEP + 0.5), MIN_SIZE), MAX_SIZE))  # halves up


def layout(root: Path, top: Path) -> dict[str, Path]:
    """{split: folder}: {"train": root} for one folder per class, else the split folders (inside ``top``, the
    data folder resolved)."""
    if not root.exists():
        raise FolderError(f"{root} does not exist: make a folder with one sub-folder of images per class "
                          "(the folder names are the labels), or train/ [val/] [test/] folders holding them")
    if not root.is_dir():
        raise FolderError(f"{root} is not a folder: pass a folder with one sub-folder of images per class")
    dirs = visible_dirs(root)
    named = {SPLIT_NAMES.get(d.name.lower()) for d in dirs}
    if "train" in named and None in named:
        others = ", ".join(f"{d.name}/" for d in dirs if d.name.lower() not in SPLIT_NAMES)
        raise FolderError(f"{root} has train/ beside {others}: either train/ [val/] [test/] folders only "
                          "(move the others out), or one sub-folder per class (rename train/)")
    if dirs and None not in named:  # only split folders
        if "train" not in named:
            raise FolderError(f"{root} has {', '.join(d.name + '/' for d in dirs)} but no train/: add a "
                              "train/ folder with one sub-folder of images per class")
        splits = {}
        for d in dirs:
            within(d, top)
            split = SPLIT_NAMES[d.name.lower()]
            if split in splits:
                raise FolderError(f"{root} has both {splits[split].name}/ and {d.name}/: keep one of them")
            splits[split] = d
        return splits
    return {"train": root}


def within(folder: Path, top: Path) -> None:
    """FolderError unless the class or split ``folder`` is ``resolved`` inside the data folder ``top``."""
    try:
        resolved(folder, top)
    except ValueError as e:
        raise FolderError(f"{folder} is {e} (training reads only what is inside the data folder)") from None


def class_label(folder: Path, top: Path) -> str:
    """The label a class folder's name gives: by the runtime's one rule (``runtime.collect.check_label``, which
    the server and the camera demo collect by), so that what they collect is what training reads; else
    FolderError naming the folder and why."""
    within(folder, top)
    try:
        return check_label(folder.name)
    except ValueError as e:
        raise FolderError(f"class folder {str(folder)!r}: {e}") from None


def class_dirs(folder: Path, root: Path, top: Path) -> dict[str, Path]:
    dirs = visible_dirs(folder)
    if not dirs:
        where = "" if folder == root else f" ({folder.name}/)"
        raise FolderError(f"no class folders in {folder}{where}: add one sub-folder per class (its name is the "
                          "label) with at least 2 images in each")
    labels: dict[str, Path] = {}
    for d in dirs:
        name = class_label(d, top)
        if name in labels:
            raise FolderError(f"{str(labels[name])!r} and {str(d)!r} are the same label {name!r}: merge or "
                              "rename one")
        labels[name] = d
    return labels


def check_distinct(per_split: dict[str, dict[str, Path]], root: Path) -> None:
    """No class folder may be another one (a symbolic link to it): the same images would be two
    labels, or test images would be training images."""
    seen: dict[Path, str] = {}
    for classes in per_split.values():
        for folder in classes.values():
            real, name = folder.resolve(), folder.relative_to(root).as_posix()
            if real in seen:
                raise FolderError(f"{name}/ and {seen[real]}/ are the same folder ({real}): each class and split "
                                  "needs its own images; copy them, or remove the link")
            seen[real] = name


def load_folder(root: str | Path, *, image_size: int | None = None, color: str | None = None,
                preprocess: str | None = None, seed: int = 42,
                validation_fraction: float = VALIDATION_FRACTION) -> ImageFolder:
    """Read ``root`` (see the module docstring) into an ``ImageFolder``; FolderError if it cannot be one.

    ``image_size`` (the input's side), ``color`` ("gray" or "rgb") and ``preprocess``
    ("resize" or "object") override what is chosen from the data."""
    root = Path(root).expanduser().absolute()  # recorded: export finds it from any directory
    if color is not None and color not in COLORS:
        raise FolderError(f"color must be one of {', '.join(COLORS)}, not {color!r}")
    if preprocess is not None and preprocess not in ("resize", "object"):
        raise FolderError(f"preprocess must be resize or object, not {preprocess!r}")
    if image_size is not None and not (isinstance(image_size, int) and 8 <= image_size <= 512):
        raise FolderError(f"image size must be an integer from 8 to 512, not {image_size!r}")
    top = root.resolve()
    splits = layout(root, top)
    for folder in dict.fromkeys([root, *splits.values()]):
        log_junk_dirs(folder, root)
    classes = class_dirs(splits["train"], root, top)
    labels = tuple(classes)
    if len(labels) < 2:
        raise FolderError(f"only one class ({labels[0]!r}) in {splits['train']}: add a sub-folder of images "
                          "for at least one more class")
    per_split = {"train": classes}
    for split in ("val", "test"):
        if split not in splits:
            continue
        theirs = class_dirs(splits[split], root, top)
        if set(theirs) != set(labels):
            missing, extra = sorted(set(labels) - set(theirs)), sorted(set(theirs) - set(labels))
            fix = []
            if missing:
                fix.append(f"add {', '.join(f'{splits[split].name}/{m}/' for m in missing)}")
            if extra:
                fix.append(f"add {', '.join(f'train/{e}/' for e in extra)} or remove them from "
                           f"{splits[split].name}/")
            raise FolderError(f"the classes of {splits[split]} differ from those of {splits['train']}: "
                              f"{'; '.join(fix)}")
        per_split[split] = theirs
    check_distinct(per_split, root)

    # first pass: decode everything once; sizes and colours decide the contract
    found: dict[str, list[Found]] = {}
    skipped: list[tuple[str, str]] = []
    cached = 0
    digest = hashlib.sha256()
    for split, dirs in per_split.items():
        found[split] = []
        for index, label in enumerate(labels):
            paths, refused = files_under(dirs[label], top)
            skipped += [(path.relative_to(root).as_posix(), reason) for path, reason in refused]
            for path in paths:
                relative = path.relative_to(root).as_posix()
                try:
                    real = resolved(path, top)  # read where the link pointed when checked, not a swapped link
                    data = read_file(real)
                    pixels = decode(data).pixels
                except Exception as e:  # noqa: BLE001 - any unusable file is skipped, never fatal
                    skipped.append((relative, str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"))
                    continue
                # names (a Windows zip's bytes too) and contents: a re-labelled or edited folder is another one
                digest.update(os.fsencode(nfc(relative)) + b"\0" + hashlib.sha256(data).digest())
                keep = cached + pixels.nbytes <= CACHE_BYTES
                cached += pixels.nbytes if keep else 0
                found[split].append(Found(real, index, min(pixels.shape[:2]), is_gray(pixels),
                                          pixels if keep else None))
    if skipped:
        names = ", ".join(f"{p} ({r})" for p, r in skipped[:SHOW_SKIPPED])
        log.warning("skipped %d file%s (not an image, empty, truncated, too big, a FIFO or device, or a link out "
                    "of the folder): %s%s", len(skipped),
                    "s" if len(skipped) != 1 else "", names,
                    f" and {len(skipped) - SHOW_SKIPPED} more" if len(skipped) > SHOW_SKIPPED else "")

    counts = {split: {label: sum(f.label == i for f in items) for i, label in enumerate(labels)}
              for split, items in found.items()}
    carve = "val" not in found
    for split, minimum in (("train", 2 if carve else 1), ("val", 1), ("test", 1)):
        if split not in counts:
            continue
        for label, n in counts[split].items():
            if n < minimum:
                where = per_split[split][label]
                need = ("at least 2 (one to train on, one to validate on)" if minimum == 2
                        else "at least 1")
                raise FolderError(f"class {label!r} has {n} readable image{'s' if n != 1 else ''} in {where}: "
                                  f"add images until it has {need}")

    every = [f for items in found.values() for f in items]
    sizes = [image_size] if image_size else list(dict.fromkeys([choose_size([f.short_side for f in every]), MIN_SIZE]))
    colours = [color] if color else ["gray"] if all(f.gray for f in every) else ["rgb", "gray"]
    candidates = [Contract(labels, size, size, channels=COLORS[c], preprocessing=kind)
                  for kind in ([preprocess] if preprocess else ["resize", "object"]) for c in colours for size in sizes]
    contract, scores = measured_choice(candidates, found["train"], seed)

    # second pass: the runtime's own preprocessing, stored as uint8
    arrays = {split: (prepared(items, contract, free=True),
                      np.array([f.label for f in items], contract.label_dtype)) for split, items in found.items()}

    for split in counts:
        log.info("%s: %s", split, ", ".join(f"{label} {n}" for label, n in counts[split].items()))
    train_images, train_labels = arrays["train"]
    val_images, val_labels = arrays.get("val", (None, None))
    if "test" in arrays:
        test_images, test_labels = arrays["test"]
        test_is_validation = False
    elif val_images is not None:
        test_images, test_labels = val_images, val_labels
        test_is_validation = True
    else:
        _, held = carve_validation(train_labels, validation_fraction, seed)
        test_images, test_labels = train_images[held], train_labels[held]
        test_is_validation = True
    if test_is_validation:
        log.info("no test/ folder: the test figures are on the validation images")
    return ImageFolder(train_images, train_labels, test_images, test_labels, contract, root,
                       val_images=val_images, val_labels=val_labels, test_is_validation=test_is_validation,
                       seed=seed, validation_fraction=validation_fraction, counts=counts, skipped=skipped,
                       checksums={"files": digest.hexdigest()}, choices=scores)


def prepared(items: list[Found], contract: Contract, free: bool = False) -> np.ndarray:
    """``items`` as the runtime prepares them for ``contract``, uint8 (N, H, W[, 3]); ``free``: drop each
    decoded copy once prepared."""
    images = np.empty((len(items), *contract.image_shape), np.uint8)
    for i, f in enumerate(items):
        pixels = f.pixels if f.pixels is not None else decode(read_file(f.path)).pixels
        if free:
            f.pixels = None
        images[i] = np.clip(np.round(prepare(pixels, contract).image * 255), 0, 255).astype(np.uint8)
    return images[..., 0] if contract.channels == 1 else images


def measured_choice(candidates: list[Contract], items: list[Found], seed: int) -> tuple[Contract, list[Score]]:
    """The first candidate when it is the only one or the folder is too small to measure (fewer than
    MEASURE_PER_CLASS training images in a class); else the one ``train.choose`` measures best."""
    labels = np.array([f.label for f in items])
    if len(candidates) == 1 or np.bincount(labels).min() < MEASURE_PER_CLASS:
        contract = candidates[0]
        log.info("preprocessing %s, colour %s, input %d x %d (%s; --preprocess, --color, --image-size to "
                 "change)", contract.preprocessing, contract.color, contract.height, contract.width,
                 "as asked, or the only choice" if len(candidates) == 1 else
                 f"too few images to measure the alternatives: a class has fewer than {MEASURE_PER_CLASS}")
        return contract, []
    picked = [items[i] for i in choose.sample(labels, choose.SAMPLE, seed)]
    return choose.choose({c: prepared(picked, c) for c in candidates},
                         np.array([f.label for f in picked]), seed)


def carve_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: ``fraction`` of every class, at least one each, seeded."""
    from train.data import stratified_split

    return stratified_split(labels, fraction, seed, min_each=1)


def oversampling(labels: np.ndarray, classes: int, ratio: float = 1.5) -> dict[int, int] | None:
    """Balanced sampling: how many times each class's images are repeated in an epoch, when
    the largest class has more than ``ratio`` times the images of the smallest; None for
    balanced data. A class is repeated round(largest / its count) times, so a rare class is
    seen about as often as the largest one. (Class weights of 6 or more made the loss of a
    batch of 16 swing so far that a tenfold-imbalanced folder's training collapsed.)"""
    counts = np.bincount(labels.astype(int), minlength=classes)
    present = counts[counts > 0]
    if len(present) == 0 or present.max() <= ratio * present.min():
        return None
    return {c: max(1, int(round(present.max() / counts[c]))) for c in range(classes) if counts[c] > 0}


def load_recorded(data: dict | None, data_dir: str | Path | None = None):
    """The data set a training report's "data" names: the folder with the recorded options,
    or Fashion-MNIST (also for a report without "kind", written before folders existed)."""
    if data and data.get("kind") == "folder":
        folder = load_folder(data["source"], image_size=data.get("image_size"), color=data.get("color"),
                             preprocess=data.get("preprocess"), seed=data.get("seed", 42),
                             validation_fraction=data.get("validation_fraction", VALIDATION_FRACTION))
        labels = data.get("labels")
        if labels is not None and list(folder.contract.labels) != list(labels):
            raise FolderError(f"the classes of {folder.source} changed since training (the model's: "
                              f"{', '.join(labels)}; the folder's now: {', '.join(folder.contract.labels)}): "
                              "restore them, or train again")
        recorded = (data.get("sha256") or {}).get("files")
        if recorded and recorded != folder.checksums.get("files"):
            log.warning("%s changed since training (its files differ from the recorded ones): the figures "
                        "are on the folder as it is now", folder.source)
        return folder
    from train import data as fmnist

    return fmnist.load(data_dir)
