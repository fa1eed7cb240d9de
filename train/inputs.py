"""The data of a run: the splits (``make_splits``) and their tf.data pipelines, one process or sharded.

Validation comes out of the training images (seeded, stratified), unless the data set has its
own; the test images are only for the report. Camera crops (``train.camera_crops``), when the
configuration asks for them, are rendered here once, and shown in each epoch by ``training_data``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runtime.contract import Contract
from train import data as fmnist
from train.augment import make_augmenter
from train.config import TrainConfig
from train.distributed import Cluster
from train.keras_env import tf

if TYPE_CHECKING:
    from train.datasets import Dataset


@dataclass
class Splits:
    contract: Contract  # what the model takes, from the data
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    repeats: dict[int, int] | None = None  # imbalanced classes: balanced sampling (folders.oversampling)
    x_camera: np.ndarray | None = None  # x_train with some images as the runtime crops them (camera_crops)

    def epoch_indices(self) -> np.ndarray:
        """The training images of one epoch: each once, or a rare class's repeated."""
        if self.repeats is None:
            return np.arange(len(self.y_train))
        return np.concatenate([np.repeat(np.flatnonzero(self.y_train == c), r) for c, r in self.repeats.items()])


def subsample(labels: np.ndarray, idx: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A stratified subset of about ``n`` of the indices ``idx``."""
    if n >= len(idx):
        return idx
    _, chosen = fmnist.stratified_split(labels[idx], n / len(idx), seed)
    return idx[chosen]


def make_splits(dataset: Dataset, config: TrainConfig, cache_dir: Path | None = None) -> Splits:
    """Validation comes out of the training set (at least one image of every class), unless
    the data set has its own (a folder's val/); the test set is only for the report.

    ``dataset``: Fashion-MNIST or a folder (``train.datasets.Dataset``). With
    ``config.camera_frames`` the camera crops are rendered (or read from ``cache_dir``)."""
    from train.folders import oversampling

    as_input = dataset.contract.model_input
    if dataset.val_images is not None:  # its own validation images
        train_idx = np.arange(len(dataset.train_labels))
        x_val_all, y_val_all = dataset.val_images, dataset.val_labels
        val_idx = np.arange(len(y_val_all))
    else:
        train_idx, val_idx = fmnist.stratified_split(
            dataset.train_labels, config.validation_fraction, config.seed, min_each=1)
        x_val_all, y_val_all = dataset.train_images, dataset.train_labels
    if config.limit and config.limit < len(train_idx):
        train_idx = subsample(dataset.train_labels, train_idx, config.limit, config.seed)
        val_idx = subsample(y_val_all, val_idx, max(config.limit // 5, 200), config.seed)
    x_val, y_val = as_input(x_val_all[val_idx]), y_val_all[val_idx]
    y_train = dataset.train_labels[train_idx]
    if dataset.test_is_validation:  # no test set of its own: report on the validation images
        x_test, y_test = x_val, y_val
    else:
        x_test, y_test = as_input(dataset.test_images), dataset.test_labels
    x_camera = None
    if config.camera_frames:
        from train.camera_crops import camera_views  # the desk simulator: a clone's, not the wheel's

        x_camera = as_input(camera_views(dataset.train_images[train_idx], dataset.contract, config.camera_frames,
                                         config.seed, cache_dir))
    return Splits(
        dataset.contract,
        as_input(dataset.train_images[train_idx]), y_train,
        x_val, y_val, x_test, y_test,
        oversampling(y_train, len(dataset.contract.labels)), x_camera)


def training_data(splits: Splits, config: TrainConfig, idx: np.ndarray, batch: int):
    """The training images ``idx``, shuffled every epoch, in batches of (images, labels); with
    camera crops, each image is its crop with a chance of ``config.camera_mix``, drawn anew
    every epoch."""
    arrays = (splits.x_train[idx], splits.y_train[idx]) if splits.x_camera is None else \
        (splits.x_train[idx], splits.x_camera[idx], splits.y_train[idx])
    data = (tf.data.Dataset.from_tensor_slices(arrays)
            .shuffle(len(idx), seed=config.seed, reshuffle_each_iteration=True).batch(batch))
    if splits.x_camera is None:
        return data

    def show_crops(x, camera, y):
        crop = tf.random.uniform([tf.shape(x)[0], 1, 1, 1]) < config.camera_mix
        return tf.where(crop, camera, x), y

    return data.map(show_crops, num_parallel_calls=tf.data.AUTOTUNE)


def taught(data: tf.data.Dataset, splits: Splits, config: TrainConfig) -> tf.data.Dataset:
    """Training batches with ``config.teacher``'s answers mixed into their labels (``train.teacher``)."""
    if not config.teacher:
        return data
    from train.teacher import distill, load_teacher

    return distill(data, load_teacher(config.teacher, splits.contract), config.teacher_weight)


def datasets(splits: Splits, config: TrainConfig, augment: bool):
    def one_hot(x, y):
        return x, tf.one_hot(tf.cast(y, tf.int32), len(splits.contract.labels))

    train = training_data(splits, config, splits.epoch_indices(), config.batch_size)
    if augment:
        train = train.map(make_augmenter(config.augment), num_parallel_calls=tf.data.AUTOTUNE)
    train = taught(train.map(one_hot), splits, config).prefetch(tf.data.AUTOTUNE)
    val = (tf.data.Dataset.from_tensor_slices((splits.x_val, splits.y_val))
           .batch(512).map(one_hot).prefetch(tf.data.AUTOTUNE))
    return train, val


def sharded_datasets(splits: Splits, config: TrainConfig, augment: bool, cluster: Cluster):
    """The training data under a strategy: each worker (input pipeline) gets its own shard.

    An epoch's images are dealt out once, in a seeded order, in equal shares (up to
    ``workers - 1`` images left out), so every worker runs the same number of steps; each
    shuffles its own share every epoch and batches it by the per-replica batch size (the
    global batch, ``--batch-size``, is the same as in a one-process run). Validation is
    sharded by Keras. Returns (train, val, steps per epoch)."""
    idx = splits.epoch_indices()
    order = np.random.default_rng(config.seed).permutation(len(idx))
    share = len(idx) // cluster.workers
    classes = len(splits.contract.labels)

    def one_hot(x, y):
        return x, tf.one_hot(tf.cast(y, tf.int32), classes)

    def shard(context: tf.distribute.InputContext):
        mine = idx[np.sort(order[context.input_pipeline_id * share:(context.input_pipeline_id + 1) * share])]
        batch = context.get_per_replica_batch_size(config.batch_size)
        data = training_data(splits, config, mine, batch).repeat()  # fit(steps_per_epoch=...): one iterator
        if augment:
            data = data.map(make_augmenter(config.augment), num_parallel_calls=tf.data.AUTOTUNE)
        return taught(data.map(one_hot), splits, config).prefetch(tf.data.AUTOTUNE)

    train = cluster.strategy.distribute_datasets_from_function(shard)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    val = (tf.data.Dataset.from_tensor_slices((splits.x_val, splits.y_val))
           .batch(512).map(one_hot).with_options(options))
    return train, val, int(np.ceil(share * cluster.workers / config.batch_size))

