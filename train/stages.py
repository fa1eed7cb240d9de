"""Float training, then quantization-aware fine-tuning; both resumable.

A run in --out is made of stages (float, then QAT). While a stage trains, ``StageBackup``
keeps a checkpoint of the last finished epoch (and the history so far) in
``--out/backup/STAGE``; when the stage ends, its model file is written with the stage's
record inside it (one atomic rename), then the stage is recorded in ``train_state.json``
and only then is the checkpoint removed. A kill at any moment therefore resumes from the
last finished epoch, or reuses the finished stage: nothing finished is trained twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
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
from train.distributed import LOCAL, Cluster
from train.model import build

log = logging.getLogger(__name__)

FLOAT_MODEL = "float_model.h5"
QAT_MODEL = "qat_model.h5"
STATE_FILE = "train_state.json"
PROGRESS_FILE = "progress.json"  # beside a stage's checkpoint: the history of its finished epochs
STAGE_ATTR = "fashion_edge_stage"  # the HDF5 attribute of a model file holding its stage record
CALIBRATION = 1024  # training images whose activations start QAT's ranges (qat_ranges "data")
RANGE_BATCH = 64  # ...looked at this many at a time


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the weights are garbage and nothing of it is kept."""


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
    patience: int = 8  # early stopping...
    monitor: str = "val_accuracy"  # ...on this (small folders: val_loss, which moves when accuracy ties)
    init: str = "scratch"  # or "bundled": the bundled network's convolutions (train.backbone)
    qat_ranges: str = "tfmot"  # QAT's activation ranges start at tfmot's [-6, 6], or "data" (start_ranges)
    # preprocessing in the loop (train.camera_crops): this many training images are rendered into
    # camera frames and cut out by the runtime's preprocessing; each epoch shows each of them as
    # its crop with a chance of camera_mix (0: off; Fashion-MNIST's recipe sets them in fashion_config)
    camera_frames: int = 0
    camera_mix: float = 0.5
    limit: int | None = None  # train on a stratified subset, for quick runs and tests
    seed: int = 42
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data_id: str | None = None  # identifies a folder data set (None: Fashion-MNIST)

    def fingerprint(self) -> str:
        """Identifies a run so that a resume never mixes two different configurations."""
        fields = dataclasses.asdict(self)
        if fields["data_id"] is None:  # Fashion-MNIST runs keep the fingerprint they always had
            del fields["data_id"]
        if not fields["camera_frames"]:  # ...and runs without camera crops too
            del fields["camera_frames"], fields["camera_mix"]
        text = json.dumps(fields, sort_keys=True)
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


def make_splits(dataset, config: TrainConfig, cache_dir: Path | None = None) -> Splits:
    """Validation comes out of the training set (at least one image of every class), unless
    the data set has its own (a folder's val/); the test set is only for the report.

    ``dataset``: ``train.data.FashionMNIST`` or ``train.folders.ImageFolder``. With
    ``config.camera_frames`` the camera crops are rendered (or read from ``cache_dir``)."""
    from train.camera_crops import camera_views
    from train.folders import oversampling

    as_input = dataset.contract.model_input
    own_val = getattr(dataset, "val_images", None) is not None
    if own_val:
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
    if getattr(dataset, "test_is_validation", False):  # no test/: report on the validation images
        x_test, y_test = x_val, y_val
    else:
        x_test, y_test = as_input(dataset.test_images), dataset.test_labels
    x_camera = None
    if config.camera_frames:
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


def datasets(splits: Splits, config: TrainConfig, augment: bool):
    def one_hot(x, y):
        return x, tf.one_hot(tf.cast(y, tf.int32), len(splits.contract.labels))

    train = training_data(splits, config, splits.epoch_indices(), config.batch_size)
    if augment:
        train = train.map(make_augmenter(config.augment), num_parallel_calls=tf.data.AUTOTUNE)
    train = train.map(one_hot).prefetch(tf.data.AUTOTUNE)
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
        return data.map(one_hot).prefetch(tf.data.AUTOTUNE)

    train = cluster.strategy.distribute_datasets_from_function(shard)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    val = (tf.data.Dataset.from_tensor_slices((splits.x_val, splits.y_val))
           .batch(512).map(one_hot).with_options(options))
    return train, val, int(np.ceil(share * cluster.workers / config.batch_size))


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


@dataclass
class Fitted:
    history: dict[str, list[float | None]]  # every finished epoch, those before a resume too
    wall_time_s: float


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
        keras.callbacks.EarlyStopping(monitor=config.monitor, patience=config.patience,
                                      restore_best_weights=True),
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


def load_qat_model(path: Path) -> keras.Model:
    import tensorflow_model_optimization as tfmot

    with tfmot.quantization.keras.quantize_scope():
        return keras.models.load_model(path, compile=False)


def quantize(float_model: keras.Model, calibration: np.ndarray | None = None) -> keras.Model:
    """The QAT model of ``float_model``; with ``calibration`` images, its activation ranges
    start where the float model's activations are (``start_ranges``)."""
    import tensorflow_model_optimization as tfmot

    qat_model = tfmot.quantization.keras.quantize_model(float_model)
    if calibration is not None:
        start_ranges(qat_model, float_model, calibration)
    return qat_model


RANGE_VARIABLES = {"output": "output", "post_activation": "output", "pre_activation": "pre_activation"}


def start_ranges(qat_model: keras.Model, float_model: keras.Model, images: np.ndarray) -> None:
    """Set every activation range of ``qat_model`` to what the float model's activations span
    on ``images`` (widened to include 0, as tfmot does).

    tfmot starts each range at [-6, 6] and moves it by a moving average with decay 0.999: after
    the few hundred QAT steps of a small folder three quarters of that start remain, so a ReLU's
    range spends a third of its 256 levels on negative values that never occur and clips what
    goes above about 6. (Measured on the garment photos: a QAT model from scratch 11 pp below
    the float model made of its own weights.) The moving average then goes on from here."""
    ranges = []  # (variable, float layer name, "output" | "pre_activation", "min" | "max")
    for wrapper in qat_model.layers:
        inner = getattr(wrapper, "layer", None)
        for variable in wrapper.weights if inner is not None else ():
            kind, _, end = variable.name.split("/")[-1].split(":")[0].rpartition("_")
            if kind in RANGE_VARIABLES and end in ("min", "max"):
                ranges.append((variable, inner.name, RANGE_VARIABLES[kind], end))
    layers = [float_model.get_layer(name) for name in dict.fromkeys(name for _, name, _, _ in ranges)]
    probe = keras.Model(float_model.inputs, [[layer.input, layer.output] for layer in layers])
    lows: dict = {}
    highs: dict = {}
    for start in range(0, len(images), RANGE_BATCH):  # batch by batch: min and max only, not every activation
        for layer, (inputs, outputs) in zip(layers, probe(images[start:start + RANGE_BATCH], training=False)):
            spans = {"output": outputs}
            if getattr(layer, "activation", None) not in (None, keras.activations.linear):
                activation, layer.activation = layer.activation, keras.activations.linear
                spans["pre_activation"] = layer(inputs)  # e.g. the logits before softmax
                layer.activation = activation
            for kind, values in spans.items():
                key = layer.name, kind
                lows[key] = min(lows.get(key, 0.0), float(tf.reduce_min(values)))
                highs[key] = max(highs.get(key, 0.0), float(tf.reduce_max(values)))
    for variable, name, kind, end in ranges:
        variable.assign(lows[name, kind] if end == "min" else highs[name, kind])


def ranges_without_training(qat_model: keras.Model, float_model: keras.Model, images: np.ndarray) -> None:
    """The quantization ranges of a QAT model that will not train (``--qat-epochs 0``).

    tfmot sets a kernel's range from the kernel, and the input's from the images, only in a
    training step; without one they keep their start, [-6, 6] for every kernel (most weights
    then round to 0: a chance-level int8 model that converts without complaint) and [0, 0]
    for the input. Training-mode calls on ``images`` set them; every other variable (the
    batch-norm statistics those calls move) is put back; the activation ranges then come
    from the float model's activations (``start_ranges``)."""
    kept = [(v, v.numpy()) for v in qat_model.weights if not v.name.split(":")[0].endswith(("_min", "_max"))]
    for start in range(0, len(images), RANGE_BATCH):
        qat_model(images[start:start + RANGE_BATCH], training=True)
    for variable, value in kept:
        variable.assign(value)
    start_ranges(qat_model, float_model, images)


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
