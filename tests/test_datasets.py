"""One interface for both kinds of data set (train.datasets): Fashion-MNIST and a folder of your own classes."""

import pytest

from train import datasets
from train.datasets import FASHION_MNIST, FOLDER, Dataset, data_kind, kind_of, open_dataset

from test_folders import make_folder


def test_both_kinds_have_the_interface(fashion, tmp_path):
    folder = open_dataset(make_folder(tmp_path / "shapes", per_class=6), seed=7)
    assert isinstance(fashion, Dataset) and isinstance(folder, Dataset)
    assert kind_of(fashion) is FASHION_MNIST and kind_of(folder) is FOLDER
    assert fashion.val_images is None and fashion.val_labels is None and not fashion.test_is_validation
    assert folder.val_images is None and folder.test_is_validation and folder.seed == 7  # no val/, no test/
    assert FASHION_MNIST.camera_crops and not FOLDER.camera_crops


def test_the_kind_is_known_before_reading(tmp_path):
    assert data_kind("fashion-mnist") is FASHION_MNIST
    assert data_kind(tmp_path) is FOLDER and data_kind("missing") is FOLDER
    assert FOLDER.folder(tmp_path) == tmp_path and FOLDER.folder(tmp_path / "missing") is None
    assert FASHION_MNIST.folder("fashion-mnist") is None


def test_options_of_the_other_kind_are_refused(tmp_path):
    with pytest.raises(ValueError, match="image_size: not an option of fashion-mnist"):
        open_dataset("fashion-mnist", image_size=32)
    with pytest.raises(ValueError, match="data_dir: not an option of folder"):
        open_dataset(tmp_path, data_dir=tmp_path)


def test_camera_crops_are_for_fashion_mnist_only(tmp_path):
    folder = open_dataset(make_folder(tmp_path / "shapes", per_class=6))
    with pytest.raises(ValueError, match="camera crops are for Fashion-MNIST"):
        datasets.recipe(folder, camera_frames=10)
    assert datasets.recipe(folder, camera_frames=0).camera_frames == 0


def test_the_report_describes_each_kind(fashion, tmp_path):
    """Fashion-MNIST's "data" record is what the report always had; a folder's comes from the folder."""
    assert fashion.describe() == {"kind": "fashion-mnist", "source": str(fashion.source), "sha256": fashion.checksums,
                                  "image_size": 28, "color": "gray", "preprocess": "object",
                                  "test_is_validation": False}
    assert datasets.test_set_name(fashion) == "the official test set"
    for split, n in (("train", 6), ("test", 2)):
        make_folder(tmp_path / "d" / split, per_class=n, seed=len(split))
    with_test = open_dataset(tmp_path / "d")
    assert with_test.describe()["kind"] == "folder" and datasets.test_set_name(with_test) == "the folder's test/ images"
    without = open_dataset(make_folder(tmp_path / "e", per_class=6))
    assert datasets.test_set_name(without) == "the validation images (no test/)"
