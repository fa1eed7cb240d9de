"""The data sets training reads, behind one interface.

A data set is Fashion-MNIST (``train.data.FashionMNIST``) or a folder of your own classes
(``train.folders.ImageFolder``). Training and the report ask both the same things: ``Dataset``.
What differs between the two kinds is their ``DataKind``: which options open them, whether camera
crops apply, how the report names their test images, and the recipe ``python -m train`` trains
them with. ``data_kind(spec)`` is the kind of what ``--data`` names, known before anything is read
(the command line checks its flags with it); ``open_dataset(spec)`` reads it; ``recipe(dataset)``
is the configuration ``python -m train`` trains it with. So::

    dataset = open_dataset("fashion-mnist")
    train.pipeline.run(recipe(dataset), dataset, Path("artifacts"))

is ``python -m train``, and ``open_dataset(DIR, seed=7)`` trained with ``recipe(dataset, seed=7)``
is ``python -m train --data DIR --seed 7``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import numpy as np

from runtime.contract import Contract

if TYPE_CHECKING:
    from train.config import TrainConfig


@runtime_checkable
class Dataset(Protocol):
    """What training asks of a data set. Images are uint8, as the runtime prepares them for the model."""

    kind: str  # the name of its DataKind, and the report's data "kind": "fashion-mnist" or "folder"
    source: Path  # where it was read from
    train_images: np.ndarray  # (N, H, W) or (N, H, W, 3)
    train_labels: np.ndarray  # (N,) class indices
    val_images: np.ndarray | None  # its own validation images, or None: they come out of the training images
    val_labels: np.ndarray | None
    test_images: np.ndarray  # the report's test set (the validation images when it has none of its own)
    test_labels: np.ndarray
    test_is_validation: bool  # it has no test images of its own: the test figures are on the validation ones
    checksums: dict[str, str]

    @property
    def contract(self) -> Contract:
        """What a model of this data takes: labels, input size and colour, preprocessing."""

    def describe(self) -> dict:
        """The report's "data": where it came from, enough to load it again (``train.folders.load_recorded``)."""


class DataKind:
    """A kind of data set: what is known of it before any image is read, how to read it, how to train it."""

    name: ClassVar[str]
    options: ClassVar[frozenset[str]]  # the options of open_dataset that it reads (every kind takes a seed)
    camera_crops: ClassVar[bool]  # its images can be rendered into camera frames (train.camera_crops)
    test_set: ClassVar[str]  # how the report names its own test images
    model_name: ClassVar[str]  # what python -m export names its model's files after (--name changes it)
    agree_on_every_image: ClassVar[bool]  # the parity gate's agreement on every image, not the test set alone

    def folder(self, spec: str | Path) -> Path | None:
        """The folder ``spec`` reads images from, if it names one."""
        return None

    def open(self, spec: str | Path, seed: int, **options) -> Dataset:
        raise NotImplementedError

    def recipe(self, dataset: Dataset, **flags) -> TrainConfig:
        raise NotImplementedError


class FashionMNISTKind(DataKind):
    name = "fashion-mnist"
    options = frozenset({"data_dir"})  # where the four IDX files are (default: searched, train.data)
    camera_crops = True
    test_set = "the official test set"
    model_name = "fashion"  # the bundled model's files: fashion_int8.tflite, ...
    agree_on_every_image = False  # 10,000 test images are plenty

    def open(self, spec, seed, data_dir=None):
        from train import data

        return data.load(data_dir)

    def recipe(self, dataset, **flags):
        from train.recipe import for_fashion_mnist

        return for_fashion_mnist(**flags)


class FolderKind(DataKind):
    name = "folder"
    options = frozenset({"image_size", "color", "preprocess"})  # else measured on the images (train.choose)
    camera_crops = False  # photos of your own classes are camera images already
    test_set = "the folder's test/ images"
    model_name = "model"  # model_int8.tflite, ...: any classes
    agree_on_every_image = True  # a folder's test images are few: agreement on every image it has

    def folder(self, spec):
        path = Path(spec)
        return path if path.is_dir() else None

    def open(self, spec, seed, image_size=None, color=None, preprocess=None):
        from train.folders import load_folder

        return load_folder(spec, image_size=image_size, color=color, preprocess=preprocess, seed=seed)

    def recipe(self, dataset, batch_size=None, **flags):
        from train.recipe import for_folder

        contract = dataset.contract  # another folder or other options: another run, never resumed
        return for_folder(dataset, batch=batch_size, **flags,
                          data_id=f"{dataset.checksums['files'][:16]}:{contract.color}:{contract.height}:"
                                  f"{contract.preprocessing}")


FASHION_MNIST, FOLDER = FashionMNISTKind(), FolderKind()
KINDS = {kind.name: kind for kind in (FASHION_MNIST, FOLDER)}


def data_kind(spec: str | Path) -> DataKind:
    """The kind of data ``spec`` (``--data``) names: ``fashion-mnist``, else a folder's path."""
    return FASHION_MNIST if str(spec) == FASHION_MNIST.name else FOLDER


def kind_of(dataset: Dataset) -> DataKind:
    return KINDS[dataset.kind]


def open_dataset(spec: str | Path, *, seed: int = 42, **options) -> Dataset:
    """Read the data ``spec`` names: ``"fashion-mnist"`` or a folder (``train.folders``).

    ``options`` are its kind's (``DataKind.options``; None: the default); ``seed`` draws a folder's
    validation images when it has no val/ and the images its framing is measured on. Raises
    ``train.data.DataError`` or ``train.folders.FolderError`` (a ValueError) when it cannot."""
    kind = data_kind(spec)
    given = {name: value for name, value in options.items() if value is not None}
    if not given.keys() <= kind.options:
        raise ValueError(f"{', '.join(sorted(given.keys() - kind.options))}: not an option of {kind.name} data "
                         f"(those are {', '.join(sorted(kind.options))})")
    return kind.open(spec, seed, **given)


def recipe(dataset: Dataset, **flags) -> TrainConfig:
    """The configuration ``python -m train`` trains ``dataset`` with, and what its flags change.

    ``flags`` (None: the recipe's choice): ``arch``, ``epochs``, ``qat_epochs``, ``batch_size``,
    ``learning_rate``, ``weight_decay``, ``teacher``, ``teacher_weight``, ``init``, ``limit``, ``seed``,
    ``camera_frames`` as in ``TrainConfig``;
    ``augment`` a preset's name (``train.augment.PRESETS``); ``flip`` "auto", "on" or "off". Fashion-MNIST's is
    ``TrainConfig.shipped()``; a folder's is chosen from its images (``train.recipe.for_folder``)."""
    kind = kind_of(dataset)
    if flags.get("camera_frames") and not kind.camera_crops:
        raise ValueError(f"camera crops are for Fashion-MNIST, not {kind.name} data: the camera simulator renders "
                         "its garments; photos of your own classes are camera images already")
    return kind.recipe(dataset, **{name: value for name, value in flags.items() if value is not None})


def test_set_name(dataset: Dataset) -> str:
    """The report's name for the images of ``dataset`` it tests on."""
    return "the validation images (no test/)" if dataset.test_is_validation else kind_of(dataset).test_set
