"""How a folder's images are framed, coloured and sized for the model, chosen by a short measurement.

Guessing from the files misleads: a desk photo whose object fills a fifth of the frame,
squeezed whole to 64x64, leaves the object a few pixels wide, while the ``object`` kind finds
and frames it; a folder of tight crops is better resized whole; random colours of the same
object can matter or only distract; a framed object may need no more pixels than the 28x28
the bundled network learnt on. So each open choice is measured on the training images:

1. every candidate contract (``resize`` or ``object``; gray, or RGB when some image has colour;
   the median shorter side, clamped, or 28) prepares a stratified sample of the training
   images as the runtime would;
2. the bundled network's convolutions (the features training starts from, ``--init bundled``)
   turn each prepared image into a vector: the last feature map averaged over a 2x2 grid,
   and its maximum;
3. a ridge classifier on those vectors is scored by stratified k-fold cross-validation (its
   closed form: seconds for all candidates).

The best cross-validated accuracy wins; a candidate other than the simplest (``resize``, in the
data's own colour and size) must beat it by more than ``MARGIN`` (near ties keep the contract
that cannot fail at segmentation). The scores are logged and recorded in the training report,
so the choice can be checked and overridden (``--preprocess``, ``--color``, ``--image-size``).
Measured on the example folders (docs/own-classes.md): the probe ranked the candidates as full
training runs did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from runtime.contract import Contract

log = logging.getLogger(__name__)

SAMPLE = 2000  # training images measured at most (stratified): the probe's cost stays seconds
FOLDS = 5
PENALTIES = (1.0, 10.0, 100.0, 1000.0)  # ridge penalties tried (the best per candidate counts)
MARGIN = 0.01  # accuracy by which a candidate must beat the simplest contract to replace it


@dataclass(frozen=True)
class Score:
    contract: Contract
    accuracy: float  # cross-validated, on the sample

    @property
    def name(self) -> str:
        return describe(self.contract)


def describe(c: Contract) -> str:
    return f"{c.preprocessing} {c.color} {c.height}x{c.width}"


def sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of a stratified sample of at most ``size`` images, every class kept."""
    if len(labels) <= size:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:max(FOLDS, round(size * np.mean(labels == c)))]
              for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def features(images: np.ndarray, contract: Contract) -> np.ndarray:
    """The bundled network's view of prepared uint8 ``images``: (N, 5 * channels of its last map)."""
    from train.backbone import load_bundled
    from train.keras_env import keras, tf
    from train.model import build

    model = build("edge", contract.image_shape, len(contract.labels))
    load_bundled(model)
    flatten = next(i for i, layer in enumerate(model.layers) if isinstance(layer, keras.layers.Flatten))
    convs = keras.Model(model.inputs, model.layers[flatten - 1].output)
    maps = convs.predict(contract.model_input(images), batch_size=256, verbose=0)
    grid = tf.image.resize(maps, (2, 2), method="area").numpy().reshape(len(maps), -1)
    return np.concatenate([grid, maps.max(axis=(1, 2))], axis=1)


def folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold number per image, each class spread evenly over the folds."""
    fold = np.empty(len(labels), int)
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        where = rng.permutation(np.flatnonzero(labels == c))
        fold[where] = np.arange(len(where)) % k
    return fold


def ridge_accuracy(x: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """Cross-validated accuracy of a one-vs-rest ridge classifier on ``x``, the best penalty's."""
    x = x.astype(np.float64)
    fold = folds(labels, min(FOLDS, int(np.bincount(labels).min())), seed)  # sample() keeps FOLDS a class
    classes, y = np.unique(labels, return_inverse=True)
    target = np.eye(len(classes))[y] * 2 - 1
    right = np.zeros(len(PENALTIES))
    for f in np.unique(fold):
        train, held = fold != f, fold == f
        mean, std = x[train].mean(0), x[train].std(0) + 1e-6
        a, b = (x[train] - mean) / std, (x[held] - mean) / std
        gram, rhs = a.T @ a, a.T @ target[train]
        for i, penalty in enumerate(PENALTIES):
            weights = np.linalg.solve(gram + penalty * np.eye(len(gram)), rhs)
            right[i] += np.sum((b @ weights).argmax(1) == y[held])
    return float(right.max() / len(labels))


def choose(prepared: dict[Contract, np.ndarray], labels: np.ndarray, seed: int) -> tuple[Contract, list[Score]]:
    """The contract whose prepared images (uint8, the same images in each) the probe scores best;
    the first of ``prepared`` is the simplest, kept unless another beats it by more than MARGIN."""
    first = next(iter(prepared.values()))
    if all(np.array_equal(images, first) for images in prepared.values()):  # e.g. images already of the input's
        log.info("every candidate prepares the same images: %s", describe(next(iter(prepared))))  # size
        return next(iter(prepared)), []
    scores = [Score(c, ridge_accuracy(features(images, c), labels, seed)) for c, images in prepared.items()]
    best = max(scores, key=lambda s: s.accuracy)
    if best.accuracy <= scores[0].accuracy + MARGIN:
        best = scores[0]
    log.info("framing, colour and input size, measured on %d training images (the bundled network's features, a "
             "ridge classifier, %d-fold cross-validation): %s -> %s (--preprocess, --color, --image-size to choose)",
             len(labels), FOLDS, ", ".join(f"{s.name} {s.accuracy:.1%}" for s in scores), best.name)
    return best.contract, scores
