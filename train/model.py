"""CNN architectures (and classic baselines) for small images: 28x28 gray garments, or your own classes.

Every builder takes ``input_shape`` (height, width, channels) and ``num_classes`` from the
data's contract; inputs are float pixels in [0, 1]; outputs are class probabilities.
Every layer is one that tensorflow-model-optimization can quantize and that converts
to int8 TFLite builtins (Conv2D, BatchNorm folded, ReLU, MaxPool, Dense, Softmax).

An architecture is named by a registry key, optionally with builder arguments:
``edge`` or ``edge:width=1.5,dropout=0.3`` (what the hyperparameter search trains).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from train.keras_env import keras

Shape = tuple[int, int, int]  # (height, width, channels): the contract's ``image_shape``
L = keras.layers


def conv_bn(filters: int, kernel: int = 3) -> list:
    # No bias: BatchNorm's beta does that job and folds into the conv for int8.
    # momentum 0.9: moving statistics settle in tens of steps, not hundreds, so
    # short runs and QAT fine-tuning evaluate with statistics that match the weights.
    return [L.Conv2D(filters, kernel, padding="same", use_bias=False),
            L.BatchNormalization(momentum=0.9), L.ReLU()]


def flatten_head(num_classes: int, dropout: float, units: int = 128) -> list:
    return [L.Flatten(), L.Dropout(dropout),
            L.Dense(units, activation="relu"), L.Dropout(dropout),
            L.Dense(num_classes, activation="softmax")]


def edge_cnn(input_shape: Shape, num_classes: int,
             dropout: float = 0.2, width: float = 1.0) -> keras.Model:
    """The shipped model: one conv at 28x28, two at 14x14, one at 7x7, flatten head.

    Early pooling keeps multiply-adds low (~15M, for latency); a flatten head keeps
    where-on-the-garment information that global pooling throws away. ``width`` scales
    every conv and the dense layer (for the hyperparameter search).
    """
    def w(n: int) -> int:
        return max(8, round(n * width))

    return keras.Sequential([
        L.Input(input_shape),
        *conv_bn(w(32)), L.MaxPooling2D(),
        *conv_bn(w(64)), *conv_bn(w(64)), L.MaxPooling2D(),
        *conv_bn(w(128)), L.MaxPooling2D(),
        *flatten_head(num_classes, dropout, w(128)),
    ], name="edge_cnn")


def basic_block(x, filters: int, stride: int = 1):
    """ResNet's basic block: two 3x3 convs with batch norm, the input added back (through a 1x1 conv
    when the shape changes), then ReLU. Conv + BN + ReLU and Add + ReLU are patterns tfmot quantizes
    whole and TFLite fuses, so the block stays int8 end to end."""
    y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    y = L.ReLU()(L.BatchNormalization(momentum=0.9)(y))
    y = L.BatchNormalization(momentum=0.9)(L.Conv2D(filters, 3, padding="same", use_bias=False)(y))
    if stride != 1 or x.shape[-1] != filters:
        x = L.BatchNormalization(momentum=0.9)(L.Conv2D(filters, 1, strides=stride, use_bias=False)(x))
    return L.ReLU()(L.Add()([y, x]))


def residual_cnn(input_shape: Shape, num_classes: int,
                 dropout: float = 0.2, width: float = 1.0) -> keras.Model:
    """The residual edge network: a conv at 28x28, then basic blocks at 14x14 (one), 7x7 (two) and
    4x4 (one), a flatten head.

    Downsampling right after the first conv keeps the multiply-adds near edge_cnn's (~14M) with five
    times its depth; ``width`` scales every conv (0.5: the lean network, a quarter of the work)."""
    def w(n: int) -> int:
        return max(8, round(n * width))

    inputs = x = L.Input(input_shape)
    for layer in [*conv_bn(w(24)), L.MaxPooling2D()]:
        x = layer(x)
    x = basic_block(x, w(32))
    x = basic_block(x, w(64), stride=2)
    x = basic_block(x, w(64))
    x = basic_block(x, w(128), stride=2)
    x = L.Dropout(dropout)(L.Flatten()(x))
    return keras.Model(inputs, L.Dense(num_classes, activation="softmax")(x), name="residual_cnn")


def deep7_cnn(input_shape: Shape, num_classes: int,
              dropout: float = 0.2) -> keras.Model:
    """Same multiply-adds as edge_cnn, moved to 7x7: one conv at 14x14, two at 7x7."""
    return keras.Sequential([
        L.Input(input_shape),
        *conv_bn(32), L.MaxPooling2D(),
        *conv_bn(64), L.MaxPooling2D(),
        *conv_bn(128), *conv_bn(128), L.MaxPooling2D(),
        *flatten_head(num_classes, dropout),
    ], name="deep7_cnn")


def design_baseline(input_shape: Shape, num_classes: int) -> keras.Model:
    """DESIGN.md's 22M-MAC reference: two convs at 28x28, global average pooling."""
    return keras.Sequential([
        L.Input(input_shape),
        *conv_bn(32), *conv_bn(32), L.MaxPooling2D(),
        *conv_bn(64), *conv_bn(64), L.MaxPooling2D(),
        *conv_bn(128), L.GlobalAveragePooling2D(),
        L.Dense(num_classes, activation="softmax"),
    ], name="design_baseline")


def notebook_cnn(input_shape: Shape, num_classes: int) -> keras.Model:
    """The common notebook CNN: two valid 3x3 convs (30, 60 filters), dense 60."""
    return keras.Sequential([
        L.Input(input_shape),
        L.Conv2D(30, 3, activation="relu"), L.MaxPooling2D(),
        L.Conv2D(60, 3, activation="relu"), L.MaxPooling2D(),
        L.Flatten(), L.Dense(60, activation="relu"),
        L.Dense(num_classes, activation="softmax"),
    ], name="notebook_cnn")


def lenet(input_shape: Shape, num_classes: int,
          l2: float = 5e-4, dropout: float = 0.3) -> keras.Model:
    """LeNet-5 layout (6 and 16 5x5 convs, dense 120 and 84) with ReLU, max pooling,
    L2 weight decay and dropout."""
    reg = keras.regularizers.l2(l2)
    return keras.Sequential([
        L.Input(input_shape),
        L.Conv2D(6, 5, padding="same", activation="relu", kernel_regularizer=reg), L.MaxPooling2D(),
        L.Conv2D(16, 5, activation="relu", kernel_regularizer=reg), L.MaxPooling2D(),
        L.Flatten(),
        L.Dense(120, activation="relu", kernel_regularizer=reg), L.Dropout(dropout),
        L.Dense(84, activation="relu", kernel_regularizer=reg), L.Dropout(dropout),
        L.Dense(num_classes, activation="softmax"),
    ], name="lenet")


def mlp(input_shape: Shape, num_classes: int,
        dropout: float = 0.2) -> keras.Model:
    """Dense only: pixels -> 256 -> 128 -> classes."""
    return keras.Sequential([
        L.Input(input_shape), L.Flatten(),
        L.Dense(256, activation="relu"), L.Dropout(dropout),
        L.Dense(128, activation="relu"), L.Dropout(dropout),
        L.Dense(num_classes, activation="softmax"),
    ], name="mlp")


def linear(input_shape: Shape, num_classes: int) -> keras.Model:
    """Softmax regression on the pixels: the floor every model must clear."""
    return keras.Sequential([L.Input(input_shape), L.Flatten(),
                             L.Dense(num_classes, activation="softmax")], name="linear")


ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "edge": edge_cnn,
    "residual": residual_cnn,
    "deep7": deep7_cnn,
    "design_baseline": design_baseline,
    "notebook_cnn": notebook_cnn,
    "lenet": lenet,
    "mlp": mlp,
    "linear": linear,
}


DATA_PARAMETERS = ("input_shape", "num_classes")  # from the data, not from an architecture spec


def parse_spec(text: str) -> tuple[str, dict[str, float]]:
    """``"edge:width=1.5,dropout=0.3"`` -> ("edge", {"width": 1.5, "dropout": 0.3})."""
    name, _, args = text.partition(":")
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    accepted = [p for p in inspect.signature(ARCHITECTURES[name]).parameters if p not in DATA_PARAMETERS]
    params = {}
    for item in filter(None, args.split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        try:
            params[key] = float(value)
        except ValueError:
            raise ValueError(f"bad architecture argument {item!r} in {text!r}: use key=number") from None
        if key not in accepted:
            raise ValueError(f"architecture {name!r} takes {', '.join(accepted) or 'no arguments'}, "
                             f"not {key!r}")
    return name, params


def spec(name: str, **params: float) -> str:
    """The inverse of ``parse_spec``: a canonical name for ``name`` built with ``params``."""
    args = ",".join(f"{k}={v:.4g}" for k, v in sorted(params.items()))
    return f"{name}:{args}" if args else name


def build(name: str, input_shape: Shape, num_classes: int) -> keras.Model:
    """Build a registry architecture for the data's shape, e.g. ``build(arch, contract.image_shape,
    len(contract.labels))``; ``name`` may carry arguments (see ``parse_spec``)."""
    arch, params = parse_spec(name)
    return ARCHITECTURES[arch](tuple(input_shape), num_classes, **params)


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
