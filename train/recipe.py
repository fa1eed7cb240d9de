"""The recipes ``python -m train`` trains with: Fashion-MNIST's, and one chosen for a folder.

Fashion-MNIST's recipe is the shipped one (``TrainConfig.shipped()``), made for 55,000 images. A
folder of a few hundred photos needs smaller batches, more epochs, early stopping on the
validation loss, light augmentation, and a network that already knows edges and shapes.
Every choice is logged; every one has a flag that overrides it. ``train.datasets.recipe`` picks
the one of a data set.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from train.augment import PRESETS
from train.backbone import check_arch, fits
from train.config import TrainConfig

log = logging.getLogger(__name__)

STEPS = 2500  # optimizer steps of float training: enough to converge from the bundled convs
EPOCHS = (20, 150)  # ...within these epochs (a tiny folder would otherwise take thousands)
QAT_STEPS = 300  # QAT adapts the weights to the int8 grid: a few hundred steps suffice
QAT_EPOCHS = (2, 10)
FLIP_KEEPS = 0.6  # flips make sense when mirrored images keep this much of their recognisability:
# digits 0.35, the example photo folders 0.68-0.96, Fashion-MNIST 0.85
INIT = "bundled"  # measured against scratch on the example folders (docs/own-classes.md)
# Shifts and erasing only: the measured framing stands objects upright and scales them already, and the
# tilts, zoom, gamma and noise of "photo" cost 0.3-1.4 pp on every example folder (docs/own-classes.md)
AUGMENT = "standard"
LEARNING_RATE = 1e-3  # peak; 3e-3 (Fashion-MNIST's) from scratch collapsed a 64x64 RGB run to one class


def batch_size(images: int) -> int:
    """16 below 1,000 images, 32 below 4,000, 64 below 16,000, else 128: enough steps per
    epoch for a small folder, full batches for a large one."""
    for limit, size in ((1000, 16), (4000, 32), (16000, 64)):
        if images < limit:
            return size
    return 128


def epochs_for(images: int, batch: int, steps: int, bounds: tuple[int, int]) -> int:
    per_epoch = math.ceil(images / batch)
    return int(np.clip(math.ceil(steps / per_epoch), *bounds))


def flip_score(images: np.ndarray, labels: np.ndarray) -> float:
    """How recognisable mirrored images stay: the accuracy of a nearest-class-mean classifier
    on the mirrored training images over its accuracy on the images themselves.

    About 1 for photos of objects and faces (a mirrored mug is a mug), far lower for digits
    and letters (a mirrored 2 is no 2); Fashion-MNIST garments score 0.85."""
    x = images.reshape(len(images), -1).astype(np.float32)
    mirrored = images[:, :, ::-1].reshape(len(images), -1).astype(np.float32)

    def unit(a):
        a = a - a.mean(axis=1, keepdims=True)
        return a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-6)

    classes = np.unique(labels)
    means = np.stack([unit(x[labels == c]).mean(axis=0) for c in classes])
    accuracy = np.mean(classes[np.argmax(unit(x) @ means.T, axis=1)] == labels)
    mirrored_accuracy = np.mean(classes[np.argmax(unit(mirrored) @ means.T, axis=1)] == labels)
    return float(mirrored_accuracy / max(accuracy, 1e-6))


def for_fashion_mnist(*, augment: str | None = None, flip: str = "auto", **changes) -> TrainConfig:
    """Fashion-MNIST's recipe, the shipped one (``TrainConfig.shipped()``), with ``changes`` (its fields);
    ``augment``: a preset instead of the recipe's augmentation, ``flip`` "on" or "off": flips or none."""
    config = TrainConfig.shipped(**changes)
    if config.init == "bundled":
        check_arch(config.arch)
    augmentation = PRESETS[augment] if augment else config.augment
    if flip != "auto":
        augmentation = dataclasses.replace(augmentation, flip=flip == "on")
    return dataclasses.replace(config, augment=augmentation)


def for_folder(dataset, *, epochs: int | None = None, qat_epochs: int | None = None,
               batch: int | None = None, learning_rate: float | None = None, augment: str | None = None,
               flip: str = "auto", init: str | None = None, **fixed) -> TrainConfig:
    """A ``TrainConfig`` for ``dataset`` (a ``train.folders.ImageFolder``); given values win.

    ``fixed``: other TrainConfig fields as they are (arch, seed, limit, data_id, ...)."""
    images = len(dataset.train_labels)
    if fixed.get("limit"):
        images = min(images, fixed["limit"])
    batch = batch or batch_size(images)
    epochs = epochs or epochs_for(images, batch, STEPS, EPOCHS)
    qat_epochs = qat_epochs if qat_epochs is not None else epochs_for(images, batch, QAT_STEPS, QAT_EPOCHS)
    if init is None:
        init = INIT if fits(fixed.get("arch", "edge")) else "scratch"
    elif init == "bundled":
        check_arch(fixed.get("arch", "edge"))
    learning_rate = learning_rate or LEARNING_RATE
    if flip == "auto":
        score = flip_score(dataset.train_images, dataset.train_labels)
        use_flip = score >= FLIP_KEEPS
        log.info("flips %s: mirrored images keep %.0f%% of their recognisability (%s %.0f%%; --flip to "
                 "change)", "on" if use_flip else "off", 100 * score, "at least" if use_flip else "below",
                 100 * FLIP_KEEPS)
    else:
        use_flip = flip == "on"
    augmentation = dataclasses.replace(PRESETS[augment or AUGMENT], flip=use_flip)
    log.info("recipe for %d images: batch %d, up to %d epochs (early stopping on the validation loss), "
             "%d QAT epochs, learning rate %g, from %s", images, batch, epochs, qat_epochs, learning_rate,
             "the bundled Fashion-MNIST network's convolutions" if init == "bundled" else "scratch")
    return TrainConfig(epochs=epochs, qat_epochs=qat_epochs, batch_size=batch, learning_rate=learning_rate,
                       patience=max(8, epochs // 5), monitor="val_loss", init=init, qat_ranges="data",
                       augment=augmentation, **fixed)
