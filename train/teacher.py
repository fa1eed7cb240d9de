"""Distillation: a trained model (the teacher) labels each training batch as the student sees it.

The student learns from ``weight`` x the teacher's probabilities + (1 - weight) x the true label,
on the very images it trains on (augmented, camera crops and all: the teacher sees what the
student sees, as in "Knowledge distillation: a good teacher is patient and consistent", Beyer
et al. 2022). The teacher is any Keras model file of the same input and classes: typically a
larger or longer-trained run's ``float_model.h5`` (``python -m train --teacher RUN/float_model.h5``).
Both stages (float, then QAT) learn from it. The model itself is unchanged: only its targets are.
"""

from __future__ import annotations

import functools
from pathlib import Path

from runtime.contract import Contract
from train.keras_env import keras, tf


class TeacherError(ValueError):
    """The teacher cannot teach this run: what is wrong, and what to give instead."""


@functools.cache
def _load(path: str) -> keras.Model:
    from train.qat import load_qat_model

    if not Path(path).is_file():
        raise TeacherError(f"--teacher {path}: no such file (give a Keras model file, e.g. RUN/float_model.h5)")
    try:
        return load_qat_model(Path(path))  # a QAT model too; a float one loads the same way
    except Exception as e:  # h5py, Keras and tfmot each raise their own kinds for a file that is no model
        raise TeacherError(f"--teacher {path}: not a Keras model file ({type(e).__name__}: {e})") from None


def load_teacher(path: str, contract: Contract) -> keras.Model:
    """The Keras model in ``path``, checked to take ``contract``'s images and give its classes."""
    model = _load(str(path))
    shape = tuple(model.input_shape[1:])
    classes = model.output_shape[-1]
    if shape != tuple(contract.image_shape) or classes != len(contract.labels):
        raise TeacherError(f"--teacher {path} takes {shape} images and gives {classes} classes; this run's model "
                           f"takes {tuple(contract.image_shape)} and gives {len(contract.labels)}: teach with a "
                           "model trained on the same data")
    return model


def distill(data: tf.data.Dataset, teacher: keras.Model, weight: float) -> tf.data.Dataset:
    """Batches of (images, one-hot labels) -> (images, targets mixing the teacher's answer in)."""

    def targets(x, y):
        return x, (1.0 - weight) * y + weight * tf.cast(teacher(x, training=False), y.dtype)

    return data.map(targets)
