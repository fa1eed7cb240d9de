"""A run's stages (float training, then quantization-aware fine-tuning), each resumable.

A run in --out is made of stages (float, then QAT). While a stage trains, ``StageBackup``
(``train.callbacks``) keeps a checkpoint of the last finished epoch (and the history so far) in
``--out/backup/STAGE``; when the stage ends, its model file is written with the stage's
record inside it (one atomic rename), then the stage is recorded in ``train_state.json``
and only then is the checkpoint removed. A kill at any moment therefore resumes from the
last finished epoch, or reuses the finished stage: nothing finished is trained twice.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from runtime.files import atomic_path, write_json
from train.config import TrainConfig
from train.distributed import LOCAL, Cluster
from train.keras_env import keras
from train.qat import load_qat_model

log = logging.getLogger(__name__)

FLOAT_MODEL = "float_model.h5"
QAT_MODEL = "qat_model.h5"
STATE_FILE = "train_state.json"
STAGE_ATTR = "fashion_edge_stage"  # the HDF5 attribute of a model file holding its stage record


@dataclass
class Fitted:
    """What a stage's training returns (``train.trainer.fit``), and what its record keeps."""
    history: dict[str, list[float | None]]  # every finished epoch, those before a resume too
    wall_time_s: float


def save_model(model: keras.Model, path: Path, record: dict | None = None) -> None:
    """Write to a temporary file and rename: a kill never leaves a truncated model.

    ``record`` (JSON) is stored inside the file, so the model and the record of the stage
    that made it appear together, in one rename."""
    with atomic_path(path) as tmp:
        model.save(tmp, include_optimizer=False)
        if record is not None:
            import h5py

            with h5py.File(tmp, "a") as f:
                f.attrs[STAGE_ATTR] = json.dumps(record, allow_nan=False)


def saved_record(path: Path) -> dict | None:
    """The record ``save_model`` stored in the model file ``path``, if any."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get(STAGE_ATTR)
        return json.loads(raw) if raw is not None else None
    except (OSError, ValueError, TypeError):
        return None


class RunState:
    """Which stages of a run in --out are finished, keyed by the config fingerprint."""

    def __init__(self, out: Path, config: TrainConfig, writer: bool = True):
        self.path, self.fingerprint, self.writer = out / STATE_FILE, config.fingerprint(), writer
        self.data = {"fingerprint": self.fingerprint, "stages": {}}
        stored = None
        if self.path.is_file():
            try:
                stored = json.loads(self.path.read_text())
            except ValueError:
                stored = None
        if isinstance(stored, dict) and stored.get("fingerprint") == self.fingerprint:
            self.data = stored
            return
        if not writer:  # another worker (the chief) owns train_state.json and the checkpoints
            return
        if stored is not None:
            log.info("configuration changed since the last run in %s: starting over", out)
        # written before any training, so that checkpoints in --out/backup always belong
        # to the configuration named here, and a run with another one never resumes them
        shutil.rmtree(out / "backup", ignore_errors=True)
        write_json(self.path, self.data)

    def done(self, stage: str) -> dict | None:
        return self.data["stages"].get(stage)

    def finish(self, stage: str, info: dict) -> None:
        self.data["stages"][stage] = info
        if self.writer:
            write_json(self.path, self.data)


def remove_backup(out: Path, stage: str) -> None:
    shutil.rmtree(out / "backup" / stage, ignore_errors=True)
    if (out / "backup").is_dir() and not any((out / "backup").iterdir()):
        (out / "backup").rmdir()


def finished_in_file(path: Path, state: RunState, stage: str) -> dict | None:
    """The info of ``stage`` from its model file, when that file is this run's finished stage."""
    if not path.is_file():
        return None
    record = saved_record(path)
    if record and record.get("fingerprint") == state.fingerprint and record.get("stage") == stage:
        return record.get("info")
    return None


def load_stage_model(stage: str, path: Path) -> keras.Model:
    return load_qat_model(path) if stage == "qat" else keras.models.load_model(path, compile=False)


def run_stage(state: RunState, stage: str, out: Path, model_file: str, train_fn, cluster: Cluster = LOCAL) -> tuple:
    """Run ``train_fn`` unless this stage already finished; returns (model, info).

    The order of the end of a stage is what makes a kill anywhere harmless: the model file
    (with the stage's record inside), then train_state.json, then the checkpoint removed.

    Under a strategy every worker saves (the chief to --out, the others to a scratch folder)
    and returns the model loaded back from that file: a plain model outside the strategy,
    which evaluates and quantizes without the other workers."""
    path = out / model_file
    info = state.done(stage)
    if info is None:
        info = finished_in_file(path, state, stage)
        if info is not None:  # killed after the model file was written, before the state
            log.info("%s stage had finished in %s before the run was stopped: recording it", stage, out)
            state.finish(stage, info)
    if info and path.is_file():
        log.info("%s stage already finished in %s: reusing %s (%d epochs)", stage, out, model_file,
                 info.get("epochs_run", 0))
        if cluster.is_chief:
            remove_backup(out, stage)
        return load_stage_model(stage, path), info
    model, fitted = train_fn()
    info = {"history": fitted.history, "epochs_run": len(fitted.history.get("loss", [])),
            "wall_time_s": fitted.wall_time_s}
    saved = path if cluster.is_chief else cluster.scratch(out) / model_file
    save_model(model, saved, {"fingerprint": state.fingerprint, "stage": stage, "info": info})
    if cluster.distributed:
        model = load_stage_model(stage, saved)
    if cluster.is_chief:
        state.finish(stage, info)
        remove_backup(out, stage)
    return model, info

