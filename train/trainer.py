"""Float training, then quantization-aware fine-tuning; both resumable."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train import data as fmnist
from train.augment import AugmentConfig, make_augmenter
from train.keras_env import keras, tf
from runtime.contract import Contract
from runtime.files import atomic_path, write_json
from train.model import build

log = logging.getLogger(__name__)

FLOAT_MODEL = "float_model.h5"
QAT_MODEL = "qat_model.h5"
STATE_FILE = "train_state.json"


@dataclass
class TrainConfig:
    arch: str = "edge"
    epochs: int = 35  # float epochs; the cosine schedule spans all of them
    qat_epochs: int = 2  # fine-tune only: QAT starts from trained float weights
    batch_size: int = 128
    learning_rate: float = 3e-3  # peak, after a one-epoch warm-up
    qat_learning_rate: float = 1e-4  # small: QAT only adapts weights to the int8 grid
    label_smoothing: float = 0.1
    validation_fraction: float = 1 / 12  # 5,000 of 60,000, stratified, from train only
    patience: int = 8  # early stopping on validation accuracy
    limit: int | None = None  # train on a stratified subset, for quick runs and tests
    seed: int = 42
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def fingerprint(self) -> str:
        """Identifies a run so that a resume never mixes two different configurations."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Splits:
    contract: Contract  # what the model takes, from the data
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def subsample(labels: np.ndarray, idx: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A stratified subset of about ``n`` of the indices ``idx``."""
    if n >= len(idx):
        return idx
    _, chosen = fmnist.stratified_split(labels[idx], n / len(idx), seed)
    return idx[chosen]


def make_splits(dataset: fmnist.FashionMNIST, config: TrainConfig) -> Splits:
    """Validation comes out of the training set; the test set is only for the report."""
    train_idx, val_idx = fmnist.stratified_split(
        dataset.train_labels, config.validation_fraction, config.seed)
    if config.limit and config.limit < len(train_idx):
        train_idx = subsample(dataset.train_labels, train_idx, config.limit, config.seed)
        val_idx = subsample(dataset.train_labels, val_idx, max(config.limit // 5, 200), config.seed)
    as_input = dataset.contract.model_input
    return Splits(
        dataset.contract,
        as_input(dataset.train_images[train_idx]), dataset.train_labels[train_idx],
        as_input(dataset.train_images[val_idx]), dataset.train_labels[val_idx],
        as_input(dataset.test_images), dataset.test_labels)


def datasets(splits: Splits, config: TrainConfig, augment: bool):
    def one_hot(x, y):
        return x, tf.one_hot(tf.cast(y, tf.int32), len(splits.contract.labels))

    train = (tf.data.Dataset.from_tensor_slices((splits.x_train, splits.y_train))
             .shuffle(len(splits.x_train), seed=config.seed, reshuffle_each_iteration=True)
             .batch(config.batch_size))
    if augment:
        train = train.map(make_augmenter(config.augment), num_parallel_calls=tf.data.AUTOTUNE)
    train = train.map(one_hot).prefetch(tf.data.AUTOTUNE)
    val = (tf.data.Dataset.from_tensor_slices((splits.x_val, splits.y_val))
           .batch(512).map(one_hot).prefetch(tf.data.AUTOTUNE))
    return train, val


def compile_model(model: keras.Model, schedule, config: TrainConfig) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"])


def cosine(peak: float, steps: int, warmup: int) -> keras.optimizers.schedules.LearningRateSchedule:
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / 10, decay_steps=max(steps - warmup, 1), alpha=0.01,
        warmup_target=peak, warmup_steps=warmup)


class EpochLog(keras.callbacks.Callback):
    """One readable line per epoch, whatever the terminal."""

    def __init__(self, stage: str, epochs: int):
        super().__init__()
        self.stage, self.epochs, self.started = stage, epochs, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        log.info("%s epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  %.0fs",
                 self.stage, epoch + 1, self.epochs, logs.get("loss", np.nan),
                 logs.get("accuracy", np.nan), logs.get("val_loss", np.nan),
                 logs.get("val_accuracy", np.nan), time.time() - self.started)


def fit(model: keras.Model, splits: Splits, config: TrainConfig, *, stage: str,
        epochs: int, peak_lr: float, augment: bool, backup_dir: Path) -> dict:
    """Train with a warm-up + cosine schedule, early stopping and crash-safe backups.

    ``BackupAndRestore`` saves model, optimizer and epoch after every epoch, so a
    killed run re-started with the same --out loses at most the epoch in progress.
    """
    train, val = datasets(splits, config, augment)
    steps = epochs * int(np.ceil(len(splits.x_train) / config.batch_size))
    warmup = min(steps // 10, int(np.ceil(len(splits.x_train) / config.batch_size)))
    compile_model(model, cosine(peak_lr, steps, warmup), config)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(backup_dir)),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=config.patience,
                                      restore_best_weights=True),
        EpochLog(stage, epochs),
    ]
    history = model.fit(train, validation_data=val, epochs=epochs, callbacks=callbacks,
                        verbose=0)
    return {k: [float(v) for v in vs] for k, vs in history.history.items()}


def save_model(model: keras.Model, path: Path) -> None:
    """Write to a temporary file and rename: a kill never leaves a truncated model."""
    with atomic_path(path) as tmp:
        model.save(tmp, include_optimizer=False)


def load_qat_model(path: Path) -> keras.Model:
    import tensorflow_model_optimization as tfmot

    with tfmot.quantization.keras.quantize_scope():
        return keras.models.load_model(path, compile=False)


def quantize(float_model: keras.Model) -> keras.Model:
    import tensorflow_model_optimization as tfmot

    return tfmot.quantization.keras.quantize_model(float_model)


class RunState:
    """Which stages of a run in --out are finished, keyed by the config fingerprint."""

    def __init__(self, out: Path, config: TrainConfig):
        self.path, self.fingerprint = out / STATE_FILE, config.fingerprint()
        self.data = {"fingerprint": self.fingerprint, "stages": {}}
        if self.path.is_file():
            stored = json.loads(self.path.read_text())
            if stored.get("fingerprint") == self.fingerprint:
                self.data = stored
            else:
                log.info("configuration changed since the last run in %s: starting over", out)
                shutil.rmtree(out / "backup", ignore_errors=True)

    def done(self, stage: str) -> dict | None:
        return self.data["stages"].get(stage)

    def finish(self, stage: str, info: dict) -> None:
        self.data["stages"][stage] = info
        write_json(self.path, self.data)


def run_stage(state: RunState, stage: str, out: Path, model_file: str, train_fn) -> tuple:
    """Run ``train_fn`` unless this stage already finished; returns (model, info)."""
    info = state.done(stage)
    if info and (out / model_file).is_file():
        log.info("%s stage already finished in %s: reusing %s", stage, out, model_file)
        loader = load_qat_model if stage == "qat" else (
            lambda p: keras.models.load_model(p, compile=False))
        return loader(out / model_file), info
    started = time.time()
    model, history = train_fn()
    save_model(model, out / model_file)
    info = {"history": history, "epochs_run": len(history.get("loss", [])),
            "wall_time_s": round(time.time() - started, 1)}
    state.finish(stage, info)
    shutil.rmtree(out / "backup" / stage, ignore_errors=True)
    if (out / "backup").is_dir() and not any((out / "backup").iterdir()):
        (out / "backup").rmdir()
    return model, info


def train(config: TrainConfig, splits: Splits, out: Path) -> dict:
    """Float training then QAT; returns {"float": (model, info), "qat": (model, info)}."""
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    state = RunState(out, config)

    def float_stage():
        model = build(config.arch, splits.contract.image_shape, len(splits.contract.labels))
        history = fit(model, splits, config, stage="float", epochs=config.epochs,
                      peak_lr=config.learning_rate, augment=True,
                      backup_dir=out / "backup" / "float")
        return model, history

    float_model, float_info = run_stage(state, "float", out, FLOAT_MODEL, float_stage)

    def qat_stage():
        model = quantize(float_model)
        history = fit(model, splits, config, stage="qat", epochs=config.qat_epochs,
                      peak_lr=config.qat_learning_rate, augment=True,
                      backup_dir=out / "backup" / "qat")
        return model, history

    qat_model, qat_info = run_stage(state, "qat", out, QAT_MODEL, qat_stage)
    return {"float": (float_model, float_info), "qat": (qat_model, qat_info)}
