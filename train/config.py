"""What a training run is: ``TrainConfig``, and the shipped recipe (``TrainConfig.shipped()``).

``python -m train`` trains Fashion-MNIST with ``TrainConfig.shipped()`` and what its flags change
(``train.recipe.for_fashion_mnist``); a folder of your own classes with a recipe chosen from the
folder (``train.recipe.for_folder``). ``train.datasets.recipe(dataset, ...)`` is the one both the
command line and Python call, so the same data and flags make the same run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from train.augment import AugmentConfig

# Fashion-MNIST's recipe renders this many of the 55,000 training images into camera frames
# (preprocessing in the loop, train.camera_crops); with camera_mix 0.5 about a ninth of each
# epoch's images are crops (docs/desk.md: the trade-off against the official test set)
CAMERA_FRAMES = 12500
# Early stopping watches the second half of the shipped recipe's schedule only: while the learning rate
# is high, validation accuracy swings by points from one epoch to the next (a distilled 60-epoch run of
# residual:width=0.5: 87.8-92.0% over epochs 20-31), and patience 8 stopped that run at epoch 31 of 60
# with 91.95% float, where the same net's run through all 60 epochs reached 92.98%.
WATCH_FROM = 0.5


@dataclass
class TrainConfig:
    """A run's configuration. The defaults are the shipped recipe without camera crops (what a folder's
    recipe starts from, and what runs saved before camera crops existed were); ``shipped()`` is the recipe."""

    arch: str = "edge"
    epochs: int = 35  # float epochs; the cosine schedule spans all of them
    qat_epochs: int = 2  # fine-tune only: QAT starts from trained float weights
    batch_size: int = 128
    learning_rate: float = 3e-3  # peak, after a one-epoch warm-up
    qat_learning_rate: float = 1e-4  # small: QAT only adapts weights to the int8 grid
    label_smoothing: float = 0.1
    weight_decay: float = 0.0  # decoupled (AdamW), per step times the learning rate; 0: Adam
    teacher: str | None = None  # a trained model file whose answers the targets mix in (train.teacher)
    teacher_weight: float = 0.5  # its share of each target
    validation_fraction: float = 1 / 12  # 5,000 of 60,000, stratified, from train only
    patience: int = 8  # early stopping...
    monitor: str = "val_accuracy"  # ...on this (small folders: val_loss, which moves when accuracy ties)...
    watch_from: float = 0.0  # ...from this share of a stage's epochs on (the shipped recipe: 0.5)
    init: str = "scratch"  # or "bundled": the bundled network's convolutions (train.backbone)
    qat_ranges: str = "tfmot"  # QAT's activation ranges start at tfmot's [-6, 6], or "data" (train.qat.start_ranges)
    # preprocessing in the loop (train.camera_crops): this many training images are rendered into
    # camera frames and cut out by the runtime's preprocessing; each epoch shows each of them as
    # its crop with a chance of camera_mix (0: off; the shipped recipe renders CAMERA_FRAMES)
    camera_frames: int = 0
    camera_mix: float = 0.5
    limit: int | None = None  # train on a stratified subset, for quick runs and tests
    seed: int = 42
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data_id: str | None = None  # identifies a folder data set (None: Fashion-MNIST)

    @classmethod
    def shipped(cls, **changes) -> TrainConfig:
        """The shipped recipe: what ``python -m train`` trains without flags (the bundled models were
        trained with it), with ``changes`` (other values of fields).

        ``train.pipeline.run(TrainConfig.shipped(), dataset, out)`` on Fashion-MNIST is that run."""
        return dataclasses.replace(cls(camera_frames=CAMERA_FRAMES, watch_from=WATCH_FROM), **changes)

    def fingerprint(self) -> str:
        """Identifies a run so that a resume never mixes two different configurations."""
        fields = dataclasses.asdict(self)
        if fields["data_id"] is None:  # Fashion-MNIST runs keep the fingerprint they always had
            del fields["data_id"]
        if not fields["camera_frames"]:  # ...and runs without camera crops too
            del fields["camera_frames"], fields["camera_mix"]
        if not fields["weight_decay"]:  # ...and without weight decay
            del fields["weight_decay"]
        if not fields["watch_from"]:  # ...and those whose early stopping watched every epoch
            del fields["watch_from"]
        if not fields["teacher"]:  # ...and without a teacher
            del fields["teacher"], fields["teacher_weight"]
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
