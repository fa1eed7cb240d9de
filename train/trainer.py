"""Float training, then quantization-aware fine-tuning; both resumable.

``train(config, splits, out)`` runs the two stages; ``fit`` trains one (warm-up and cosine,
early stopping, a checkpoint every epoch). The parts are modules of their own, and every name
this module always had is still importable from here:

- ``train.config``: ``TrainConfig`` and the shipped recipe (``TrainConfig.shipped()``);
- ``train.inputs``: the splits (``make_splits``) and their tf.data pipelines;
- ``train.callbacks``: the epoch log and ``StageBackup``, the checkpoint of a stage;
- ``train.qat``: the QAT model and its quantization ranges;
- ``train.stages``: the resumable stages in --out (``RunState``, ``run_stage``, the model files).

``train.pipeline.run`` is a whole run: splits, training, evaluation, report and plots.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from train.callbacks import PROGRESS_FILE, EpochLog, StageBackup, finite_or_none, read_progress
from train.config import TrainConfig
from train.distributed import LOCAL, Cluster
from train.inputs import Splits, datasets, make_splits, sharded_datasets, subsample, training_data
from train.keras_env import keras
from train.model import build
from train.qat import (CALIBRATION, RANGE_BATCH, RANGE_VARIABLES, load_qat_model, quantize, ranges_without_training,
                       start_ranges)
from train.stages import (FLOAT_MODEL, QAT_MODEL, STAGE_ATTR, STATE_FILE, Fitted, RunState, finished_in_file,
                          load_stage_model, remove_backup, run_stage, save_model, saved_record)

__all__ = [  # what train.trainer always offered, wherever it lives now
    "CALIBRATION", "FLOAT_MODEL", "PROGRESS_FILE", "QAT_MODEL", "RANGE_BATCH", "RANGE_VARIABLES", "STAGE_ATTR",
    "STATE_FILE", "EpochLog", "Fitted", "RunState", "Splits", "StageBackup", "TrainConfig", "TrainingDiverged",
    "compile_model", "cosine", "datasets", "finished_in_file", "finite_or_none", "fit", "load_qat_model",
    "load_stage_model", "make_splits", "quantize", "ranges_without_training", "read_progress", "remove_backup",
    "run_stage", "save_model", "saved_record", "sharded_datasets", "start_ranges", "subsample", "train",
    "training_data",
]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the weights are garbage and nothing of it is kept."""


def compile_model(model: keras.Model, schedule, config: TrainConfig) -> None:
    model.compile(
        optimizer=(keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay) if config.weight_decay
                   else keras.optimizers.Adam(schedule)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"])


def cosine(peak: float, steps: int, warmup: int) -> keras.optimizers.schedules.LearningRateSchedule:
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / 10, decay_steps=max(steps - warmup, 1), alpha=0.01,
        warmup_target=peak, warmup_steps=warmup)


def fit(model: keras.Model, splits: Splits, config: TrainConfig, *, stage: str,
        epochs: int, peak_lr: float, augment: bool, backup_dir: Path, cluster: Cluster = LOCAL,
        callbacks: list | None = None) -> Fitted:
    """Train with a warm-up + cosine schedule, early stopping and crash-safe backups.

    ``StageBackup`` saves model, optimizer and epoch after every epoch, so a killed run
    re-started with the same --out loses at most the epoch in progress. A NaN or infinite
    loss stops training and raises ``TrainingDiverged``. Under a strategy (``cluster``),
    ``model`` must have been built in its scope. ``callbacks`` run after each epoch's backup
    (e.g. a search reporting to its scheduler).
    """
    if epochs == 0:  # e.g. --qat-epochs 0: the model as it is
        return Fitted({}, 0.0)
    if cluster.distributed:
        train, val, per_epoch = sharded_datasets(splits, config, augment, cluster)
    else:
        train, val = datasets(splits, config, augment)
        per_epoch = int(np.ceil(len(splits.epoch_indices()) / config.batch_size))
    steps = epochs * per_epoch
    warmup = min(steps // 10, per_epoch)
    with cluster.scope():
        compile_model(model, cosine(peak_lr, steps, warmup), config)
    backup = StageBackup(backup_dir, stage, writer=cluster.is_chief)
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.EarlyStopping(monitor=config.monitor, patience=config.patience, restore_best_weights=True,
                                      start_from_epoch=int(config.watch_from * epochs)),
        EpochLog(stage, epochs),
        backup,  # last of ours: it backs up the weights EarlyStopping restores at the end
        *(callbacks or ()),
    ]
    model.fit(train, validation_data=val, epochs=epochs, callbacks=callbacks, verbose=0,
              steps_per_epoch=per_epoch if cluster.distributed else None)
    if backup.diverged is not None:
        epoch, loss = backup.diverged
        raise TrainingDiverged(
            f"{stage} training diverged: the loss became {loss} in epoch {epoch + 1}/{epochs} "
            f"(peak learning rate {peak_lr:g}); nothing of that epoch was kept. "
            "Lower --learning-rate and run again")
    return Fitted(backup.history, round(backup.wall_time_s, 1))


def train(config: TrainConfig, splits: Splits, out: Path, cluster: Cluster = LOCAL) -> dict:
    """Float training then QAT; returns {"float": (model, info), "qat": (model, info)}.

    Under a strategy (``cluster``) the models are built in its scope and trained on every
    worker; only the chief writes to ``out`` (see ``run_stage``)."""
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    state = RunState(out, config, writer=cluster.is_chief)

    def float_stage():
        with cluster.scope():
            model = build(config.arch, splits.contract.image_shape, len(splits.contract.labels))
            if config.init == "bundled":
                from train.backbone import load_bundled

                load_bundled(model)
        return model, fit(model, splits, config, stage="float", epochs=config.epochs,
                          peak_lr=config.learning_rate, augment=True, backup_dir=out / "backup" / "float",
                          cluster=cluster)

    float_model, float_info = run_stage(state, "float", out, FLOAT_MODEL, float_stage, cluster)

    def qat_stage():
        if not cluster.distributed:
            model = quantize(float_model)
        else:  # the QAT model in the strategy's scope; the float one is a plain model, calibrated locally
            with cluster.scope():
                model = quantize(float_model)
        if not config.qat_epochs:  # no step will move the ranges from their start
            ranges_without_training(model, float_model, splits.x_train[:CALIBRATION])
        elif config.qat_ranges == "data":
            start_ranges(model, float_model, splits.x_train[:CALIBRATION])
        return model, fit(model, splits, config, stage="qat", epochs=config.qat_epochs,
                          peak_lr=config.qat_learning_rate, augment=True, backup_dir=out / "backup" / "qat",
                          cluster=cluster)

    qat_model, qat_info = run_stage(state, "qat", out, QAT_MODEL, qat_stage, cluster)
    cluster.cleanup(out)
    return {"float": (float_model, float_info), "qat": (qat_model, qat_info)}
