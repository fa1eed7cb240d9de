"""``--init bundled``: start a new model from the bundled Fashion-MNIST network's convolutions.

The bundled float ONNX model (``runtime/models/edge/fashion_float.onnx``, checked against its
recorded checksum) holds the trained convolutions with BatchNorm folded in (kernel and
bias). They go into a freshly built ``edge`` model as:

1. each conv kernel, OIHW -> HWIO; for colour inputs the first kernel is repeated over
   R, G and B and divided by 3, so a gray picture in colour gives the same features;
2. each following BatchNorm as the identity plus the folded bias (gamma 1, beta = bias,
   mean 0, variance 1 - epsilon), so its output equals the bundled network's, and
   fine-tuning adapts it from there;
3. the head (flatten, dense, softmax) stays freshly initialised: its size depends on the
   new input size and classes.

Conv layers are size-agnostic, so any input size works. Nothing is downloaded.
"""

from __future__ import annotations

import numpy as np

from runtime import predictor
from train.keras_env import keras

BUNDLED = predictor.BUNDLED["float.onnx"]


class BackboneError(ValueError):
    """The model cannot take the bundled network's layers; the message says what to use."""


def fits(arch: str) -> bool:
    """Whether an architecture spec (``train.model.parse_spec``) has the bundled network's layers."""
    from train.model import parse_spec

    name, params = parse_spec(arch)
    return name == "edge" and params.get("width", 1.0) == 1.0


def check_arch(arch: str) -> None:
    if not fits(arch):
        raise BackboneError(f"--init bundled needs the bundled network's layers (--arch edge, width 1), "
                            f"not {arch!r}: use --arch edge, or --init scratch")


def bundled_convs(path=BUNDLED) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(kernel OIHW, folded bias)] of every Conv node of the bundled ONNX model, in graph order."""
    import onnx
    from onnx import numpy_helper

    from runtime.backends import ModelError, open_backend

    try:
        open_backend(path)  # its checksum and contract verified
    except ModelError as e:
        raise BackboneError(f"the bundled network cannot be used ({e}); reinstall fashion-edge, "
                            "or train with --init scratch") from None
    graph = onnx.load(str(path)).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return [(weights[n.input[1]], weights[n.input[2]]) for n in graph.node if n.op_type == "Conv"]


def load_bundled(model: keras.Model, path=BUNDLED) -> int:
    """Set ``model``'s conv + BatchNorm pairs from the bundled network; returns how many."""
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    bundled = bundled_convs(path)
    shapes = [tuple(layer.kernel.shape[:2]) + tuple(layer.kernel.shape[3:]) for layer in convs]
    wanted = [(k.shape[2], k.shape[3], k.shape[0]) for k, _ in bundled]
    if len(convs) != len(bundled) or len(norms) != len(convs) or shapes != wanted:
        raise BackboneError(f"--init bundled needs the bundled network's layers (--arch edge, width 1), "
                            f"not {model.name}'s: use --arch edge, or --init scratch")
    for conv, norm, (kernel, bias) in zip(convs, norms, bundled):
        kernel = kernel.transpose(2, 3, 1, 0)  # 1. OIHW -> HWIO
        channels = conv.kernel.shape[2]
        if kernel.shape[2] != channels:  # gray -> colour: the same response to a gray picture
            kernel = np.repeat(kernel, channels, axis=2) / channels
        conv.set_weights([kernel.astype(np.float32)])
        ones = np.ones_like(bias, np.float32)  # 2. BatchNorm as identity + bias
        norm.set_weights([ones, bias.astype(np.float32), np.zeros_like(ones), ones - norm.epsilon])
    return len(convs)
