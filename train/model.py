"""CNN architectures for 28x28 grayscale garments.

Inputs are float pixels in [0, 1], shape (28, 28, 1); outputs are class probabilities.
Every layer is one that tensorflow-model-optimization can quantize and that converts
to int8 TFLite builtins (Conv2D, BatchNorm folded, ReLU, MaxPool, Dense, Softmax).
"""

from __future__ import annotations

from collections.abc import Callable

from train.keras_env import keras

NUM_CLASSES = 10
INPUT_SHAPE = (28, 28, 1)
L = keras.layers


def conv_bn(filters: int, kernel: int = 3) -> list:
    # No bias: BatchNorm's beta does that job and folds into the conv for int8.
    # momentum 0.9: moving statistics settle in tens of steps, not hundreds, so
    # short runs and QAT fine-tuning evaluate with statistics that match the weights.
    return [L.Conv2D(filters, kernel, padding="same", use_bias=False),
            L.BatchNormalization(momentum=0.9), L.ReLU()]


def flatten_head(dropout: float) -> list:
    return [L.Flatten(), L.Dropout(dropout),
            L.Dense(128, activation="relu"), L.Dropout(dropout),
            L.Dense(NUM_CLASSES, activation="softmax")]


def edge_cnn(dropout: float = 0.2) -> keras.Model:
    """The shipped model: one conv at 28x28, two at 14x14, one at 7x7, flatten head.

    Early pooling keeps multiply-adds low (~15M, for latency); a flatten head keeps
    where-on-the-garment information that global pooling throws away.
    """
    return keras.Sequential([
        L.Input(INPUT_SHAPE),
        *conv_bn(32), L.MaxPooling2D(),
        *conv_bn(64), *conv_bn(64), L.MaxPooling2D(),
        *conv_bn(128), L.MaxPooling2D(),
        *flatten_head(dropout),
    ], name="edge_cnn")


def deep7_cnn(dropout: float = 0.2) -> keras.Model:
    """Same multiply-adds as edge_cnn, moved to 7x7: one conv at 14x14, two at 7x7."""
    return keras.Sequential([
        L.Input(INPUT_SHAPE),
        *conv_bn(32), L.MaxPooling2D(),
        *conv_bn(64), L.MaxPooling2D(),
        *conv_bn(128), *conv_bn(128), L.MaxPooling2D(),
        *flatten_head(dropout),
    ], name="deep7_cnn")


def design_baseline() -> keras.Model:
    """DESIGN.md's 22M-MAC reference: two convs at 28x28, global average pooling."""
    return keras.Sequential([
        L.Input(INPUT_SHAPE),
        *conv_bn(32), *conv_bn(32), L.MaxPooling2D(),
        *conv_bn(64), *conv_bn(64), L.MaxPooling2D(),
        *conv_bn(128), L.GlobalAveragePooling2D(),
        L.Dense(NUM_CLASSES, activation="softmax"),
    ], name="design_baseline")


ARCHITECTURES: dict[str, Callable[[], keras.Model]] = {
    "edge": edge_cnn,
    "deep7": deep7_cnn,
    "design_baseline": design_baseline,
}


def build(name: str = "edge") -> keras.Model:
    try:
        return ARCHITECTURES[name]()
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose one of "
                         f"{', '.join(ARCHITECTURES)}") from None


def count_macs(model: keras.Model) -> int:
    """Multiply-adds of one forward pass (convolutions and dense layers)."""
    macs = 0
    for layer in model.layers:
        if isinstance(layer, L.Conv2D):
            _, h, w, c_out = layer.output_shape
            kh, kw = layer.kernel_size
            macs += h * w * c_out * kh * kw * layer.input_shape[-1]
        elif isinstance(layer, L.Dense):
            macs += layer.input_shape[-1] * layer.units
    return macs
