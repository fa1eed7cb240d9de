"""Keras callbacks of a training stage: one log line per epoch, and ``StageBackup``, the
checkpoint that makes a stage resumable (``train.stages``)."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from runtime.files import write_json
from train.keras_env import keras

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"  # beside a stage's checkpoint: the history of its finished epochs


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


def finite_or_none(value) -> float | None:
    """A metric for JSON: a float, or None (null) where it is undefined (NaN or infinite)."""
    value = float(value)
    return value if math.isfinite(value) else None


def read_progress(path: Path) -> dict:
    try:
        progress = json.loads(path.read_text())
        return {"history": dict(progress["history"]), "wall_time_s": float(progress["wall_time_s"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {"history": {}, "wall_time_s": 0.0}


class StageBackup(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore, but the checkpoint outlives ``fit()`` and keeps the history.

    Keras deletes its checkpoint when ``fit()`` returns, before the caller has saved the
    model: a kill in between threw the whole stage away. This one keeps it (``run_stage``
    removes it once the model file is written and recorded). At the end of training the
    final weights (the best epoch's, restored by EarlyStopping, which must come earlier in
    the callback list) are backed up as the last epoch, so a resume has nothing left to
    train and ``fit()`` returns the finished model at once. The logs of every finished
    epoch are kept beside the checkpoint, so a resumed stage reports all its epochs.

    An epoch whose loss is NaN or infinite is neither backed up nor recorded (``diverged``
    says which): a re-run resumes from the last good epoch, never from diverged weights.

    Under a multi-worker strategy every worker backs up (Keras writes the non-chief's
    checkpoints to a temporary folder) and restores from the chief's checkpoint; only the
    chief writes the history.
    """

    def __init__(self, backup_dir: Path, stage: str, writer: bool = True):
        super().__init__(str(backup_dir), delete_checkpoint=False)
        self.progress_path = Path(backup_dir) / PROGRESS_FILE
        self.stage, self.writer = stage, writer
        self.history: dict[str, list[float | None]] = {}
        self.wall_time_s = 0.0  # of the recorded epochs, across resumes
        self.diverged: tuple[int, float] | None = None  # (epoch, loss)
        self.first_epoch: int | None = None  # the first epoch this fit() ran, if any

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # restores the checkpoint, if there is one
        progress = read_progress(self.progress_path)
        self.history, self.wall_time_s = progress["history"], progress["wall_time_s"]
        self.mark = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if self.first_epoch is None:
            self.first_epoch = epoch
            # the history is written before the checkpoint: keep what the checkpoint has
            self.history = {key: values[:epoch] for key, values in self.history.items()}
            if epoch:
                log.info("%s: resuming after epoch %d/%d from the checkpoint in %s", self.stage, epoch,
                         self.params["epochs"], self.backup_dir)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            self.diverged = (epoch, float(loss))
            return
        for key, value in logs.items():
            self.history.setdefault(key, []).append(finite_or_none(value))
        now = time.time()
        self.wall_time_s, self.mark = self.wall_time_s + now - self.mark, now
        if self.writer:
            write_json(self.progress_path, {"history": self.history, "wall_time_s": round(self.wall_time_s, 1)})
        super().on_epoch_end(epoch, logs)  # the checkpoint

    def on_train_end(self, logs=None):
        if self.first_epoch is None:
            log.info("%s: all %d epochs had finished before the run was stopped: "
                     "restored from %s, not retraining", self.stage,
                     len(self.history.get("loss", [])), self.backup_dir)
        elif self.diverged is None:
            # the epoch counter and _backup are BackupAndRestore's own (tf-keras < 2.22 is pinned):
            # a checkpoint of the last epoch is what makes fit() resume with nothing to train
            last = self.params["epochs"] - 1
            self._training_state._ckpt_saved_epoch.assign(last)
            self._backup(epoch=last)
        super().on_train_end(logs)

