"""Calibration images: drawn from the training set, stratified by class, seeded."""

from __future__ import annotations

import logging

import numpy as np

from runtime.contract import Contract

log = logging.getLogger(__name__)
MIN_PER_CLASS = 20  # below this, activation ranges are estimated from too few samples


def calibration_images(images: np.ndarray, labels: np.ndarray, size: int, contract: Contract,
                       seed: int = 0) -> np.ndarray:
    """``size`` training images, equal per class, as the model's float input batch."""
    classes = np.unique(labels)
    per_class = max(1, size // len(classes))
    if per_class < MIN_PER_CLASS:
        log.warning("only %d calibration images per class (%d in all): int8 ranges may be "
                    "poor; use --calibration-size %d or more", per_class, size,
                    MIN_PER_CLASS * len(classes))
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), min(per_class, np.sum(labels == c)),
                                        replace=False) for c in classes])
    rng.shuffle(chosen)
    return contract.model_input(images[chosen])
