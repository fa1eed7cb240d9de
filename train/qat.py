"""Quantization-aware training's model and its quantization ranges (tensorflow-model-optimization)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from train.keras_env import keras, tf

CALIBRATION = 1024  # training images whose activations start QAT's ranges (qat_ranges "data")
RANGE_BATCH = 64  # ...looked at this many at a time


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

