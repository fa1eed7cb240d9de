"""Calibration images: drawn from the training set, stratified by class, seeded."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)
MIN_PER_CLASS = 20  # below this, activation ranges are estimated from too few samples


def calibration_images(images: np.ndarray, labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """``size`` training images, equal per class, as float32 (N, 28, 28, 1) in [0, 1]."""
    classes = np.unique(labels)
    per_class = max(1, size // len(classes))
    if per_class < MIN_PER_CLASS:
        log.warning("only %d calibration images per class (%d in all): int8 ranges may be "
                    "poor; use --calibration-size %d or more", per_class, size,
                    MIN_PER_CLASS * len(classes))
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                             for c in classes])
    rng.shuffle(chosen)
    return (images[chosen].astype(np.float32) / 255.0)[..., None]
