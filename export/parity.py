"""The parity gate: every exported format against the QAT Keras model.

It asks two questions, each on the images that can answer it:

- Does an int8 format give the QAT model's answers? Top-1 agreement needs no labels, so for a
  folder it is measured on every image the data set has (training, validation and test): on
  125 validation images two disagreements are 1.6%, on 1,500 images they are noise.
  Fashion-MNIST: its 10,000 test images, which resolve 0.1% already.
- Does it lose accuracy? That needs held-out labelled images: the test images (a folder's
  test/, else its validation images). Per image, QAT correct minus int8 correct; the gate fails
  when even the lower confidence bound of the mean drop is above 0.5 pp, so a drop of two
  images in 120 is not taken for a real one, while on 10,000 images the bar stays about 0.5 pp.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.formats import FORMATS
from runtime.backends import model_bytes, open_backend
from runtime.contract import Contract
from train.report import confusion_matrix

MAX_INT8_ACCURACY_DROP = 0.005  # int8's accuracy may be at most 0.5 pp below the QAT model's...
Z_ONE_SIDED_95 = 1.645  # ...beyond the statistical doubt of a one-sided 95% bound...
MIN_INT8_AGREEMENT = 0.99  # ...and it must agree with it on top-1 for 99% of the images
REFERENCE = "keras-qat"
CHUNK = 1000  # images converted to the model's float input at a time


@dataclass
class Images:
    """uint8 images as the data set stores them, with their labels."""
    pixels: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.pixels)

    def subset(self, indices: np.ndarray) -> Images:
        return self if len(indices) == len(self) else Images(self.pixels[indices], self.labels[indices])

    def spread(self, n: int | None) -> np.ndarray:
        """The indices of at most ``n`` images evenly spread over the set (every class, in a folder's order)."""
        return np.arange(len(self)) if not n or n >= len(self) else np.linspace(0, len(self) - 1, n).astype(int)


def every_image(dataset) -> Images:
    """The images top-1 agreement is measured on: a folder's every image once (its training, validation
    and test images; with ``test_is_validation`` the test images are validation or training images,
    counted already), Fashion-MNIST's 10,000 test images."""
    from train.datasets import kind_of

    if not kind_of(dataset).agree_on_every_image:
        return Images(dataset.test_images, dataset.test_labels)
    parts = [(dataset.train_images, dataset.train_labels)]
    if dataset.val_images is not None:
        parts.append((dataset.val_images, dataset.val_labels))
    if not dataset.test_is_validation:
        parts.append((dataset.test_images, dataset.test_labels))
    return Images(np.concatenate([p for p, _ in parts]), np.concatenate([labels for _, labels in parts]))


def in_chunks(predict: Callable[[np.ndarray], np.ndarray], images: Images, contract: Contract) -> np.ndarray:
    """``predict`` (model input -> probabilities) over ``images``, converted a chunk at a time: a
    folder's every image as float32 at once could take gigabytes."""
    return np.concatenate([predict(contract.model_input(images.pixels[i:i + CHUNK]))
                           for i in range(0, len(images), CHUNK)])


def predictions(predict: Callable[[np.ndarray], np.ndarray], every: Images, test: Images,
                contract: Contract) -> tuple[np.ndarray, np.ndarray]:
    """``predict``'s probabilities on ``every`` and on ``test`` (computed once when they are the same images)."""
    on_every = in_chunks(predict, every, contract)
    return on_every, on_every if test.pixels is every.pixels else in_chunks(predict, test, contract)


def accuracy_drop(reference_correct: np.ndarray, int8_correct: np.ndarray, z: float = Z_ONE_SIDED_95) -> dict:
    """The QAT model's accuracy minus int8's on the same images, with a one-sided lower confidence bound.

    Per image d = (QAT correct) - (int8 correct), in {-1, 0, 1}; only the discordant images (one
    right, the other wrong) carry information. The bound is the normal approximation of the
    mean of d with Agresti and Min's correction (half an image added to each discordant count):
    without it a set whose discordant images all go one way has zero variance and its bound is
    certainty, so a single image lost out of one would fail the gate."""
    n = len(reference_correct)
    qat_only = int(np.sum(reference_correct & ~int8_correct))
    int8_only = int(np.sum(int8_correct & ~reference_correct))
    b, c, m = qat_only + 0.5, int8_only + 0.5, n + 2
    mean = (b - c) / m
    spread = math.sqrt(max((b + c) / m - mean ** 2, 0.0) / m)
    return {"images": n, "qat_only_correct": qat_only, "int8_only_correct": int8_only,
            "drop": (qat_only - int8_only) / n, "lower_bound": mean - z * spread}


def per_class(hits: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    """The mean of ``hits`` (bool per image) over each class's images."""
    return {name: round(float(hits[labels == i].mean()), 4) if np.any(labels == i) else None
            for i, name in enumerate(names)}


def compare(probs: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray], every: Images,
            test: Images, names: tuple[str, ...], size_bytes: int) -> dict:
    """One format's metrics: agreement and probability differences on ``every``, accuracy on ``test``;
    ``probs`` and ``reference`` are (on every, on test)."""
    agree = probs[0].argmax(1) == reference[0].argmax(1)
    diff = np.abs(probs[0] - reference[0])
    predicted = probs[1].argmax(1)
    matrix = confusion_matrix(test.labels, predicted, len(names))
    return {
        "accuracy": float((predicted == test.labels).mean()),
        "accuracy_drop": accuracy_drop(reference[1].argmax(1) == test.labels, predicted == test.labels),
        "top1_agreement": float(agree.mean()),
        "agreement_images": len(every),
        "disagreements": int(np.sum(~agree)),
        "mean_abs_prob_diff": float(diff.mean()),
        "max_abs_prob_diff": float(diff.max()),
        "size_kb": round(size_bytes / 1024, 1),
        "per_class_recall": {name: round(float(matrix[i, i] / max(matrix[i].sum(), 1)), 4)
                             for i, name in enumerate(names)},
        "per_class_agreement": per_class(agree, every.labels, names),
        "confusion_matrix": matrix.tolist(),
    }


def evaluate(reference: tuple[np.ndarray, np.ndarray], reference_size: int, models: dict[str, Path],
             every: Images, test: Images, contract: Contract) -> dict:
    """Metrics per format; ``models`` maps a format name (e.g. "tflite-int8") to its file, ``reference``
    is the QAT model's (probabilities on ``every``, on ``test``)."""
    names = contract.labels
    results = {REFERENCE: compare(reference, reference, every, test, names, reference_size)}
    for name, path in models.items():
        fmt = FORMATS.get(name)
        limit = fmt.gate_images if fmt else None
        backend = (fmt.open if fmt and fmt.open else open_backend)(path)
        on_every, on_test = every.spread(limit), test.spread(limit)
        some_every, some_test = every.subset(on_every), test.subset(on_test)
        if test.pixels is every.pixels and len(on_every) == len(on_test):
            some_test = some_every  # one pass when they are the same images
        # its own contract: a MediaPipe file takes RGB for a gray model
        probs = predictions(backend.run, some_every, some_test, backend.info.contract)
        results[name] = compare(probs, (reference[0][on_every], reference[1][on_test]), some_every, some_test,
                                names, getattr(backend, "size_bytes", None) or model_bytes(path))
    return results


def is_int8(name: str) -> bool:
    return name in FORMATS and FORMATS[name].int8


def int8_vs_float(results: dict) -> dict:
    """Per-class recall of each int8 format beside the float one, and the change in pp."""
    floats = [name for name in results if name in FORMATS and not FORMATS[name].int8]
    base = results[floats[0] if floats else REFERENCE]["per_class_recall"]
    return {name: {cls: {"float": base[cls], "int8": r["per_class_recall"][cls],
                         "delta_pp": round(100 * (r["per_class_recall"][cls] - base[cls]), 2)}
                   for cls in base}
            for name, r in results.items() if is_int8(name)}


def min_agreement(images: int | None = None) -> float:
    """The least top-1 agreement allowed on ``images`` images: 99%, but never less than one image's
    worth of disagreement (on 50 images 99% would allow none)."""
    if not images:
        return MIN_INT8_AGREEMENT
    return min(MIN_INT8_AGREEMENT, 1.0 - (1.0 / images + 1e-9))


def failures(results: dict) -> list[str]:
    """Why the gate fails (empty when it passes)."""
    problems = []
    for name, r in results.items():
        if not is_int8(name):
            continue
        drop = r["accuracy_drop"]
        if drop["lower_bound"] > MAX_INT8_ACCURACY_DROP:
            problems.append(f"{name}: accuracy {r['accuracy']:.2%} is {100 * drop['drop']:.2f} pp below the QAT "
                            f"model's on {drop['images']} images (at least {100 * drop['lower_bound']:.2f} pp with "
                            f"95% confidence; {drop['qat_only_correct']} right only by QAT, "
                            f"{drop['int8_only_correct']} only by int8), more than "
                            f"{100 * MAX_INT8_ACCURACY_DROP:.1f} pp")
        least = min_agreement(r["agreement_images"])
        if r["top1_agreement"] < least:
            problems.append(f"{name}: top-1 agreement {r['top1_agreement']:.2%} ({r['disagreements']} of "
                            f"{r['agreement_images']} images differ) < {least:.2%}")
    return problems


def table(results: dict) -> str:
    """The formats side by side: accuracy on the test images with the drop, its 95% lower bound
    and the discordant images (lost: right only by QAT; won: only by this format), agreement on every image."""
    rows = [f"{'format':<14}{'accuracy':>10}{'drop pp':>9}{'bound pp':>10}{'lost/won':>9}"
            f"{'agree':>9}{'differ':>8}{'mean|dp|':>10}{'max|dp|':>9}{'size KB':>9}"]
    for name, r in results.items():
        d = r["accuracy_drop"]
        paired = (f"{100 * d['drop']:>9.2f}{100 * d['lower_bound']:>10.2f}"
                  f"{d['qat_only_correct']:>5}/{d['int8_only_correct']:<3}" if name != REFERENCE else " " * 28)
        rows.append(f"{name:<14}{r['accuracy']:>10.2%}{paired}{r['top1_agreement']:>9.2%}"
                    f"{r['disagreements']:>8}{r['mean_abs_prob_diff']:>10.5f}{r['max_abs_prob_diff']:>9.4f}"
                    f"{r['size_kb']:>9.1f}")
    for name, r in results.items():
        if r["agreement_images"] < results[REFERENCE]["agreement_images"]:
            rows.append(f"{name}: on {r['agreement_images']:,} of the images, evenly spread (a slow runner)")
    for name, r in results.items():
        worst = min(((v, k) for k, v in r["per_class_agreement"].items() if v is not None), default=None)
        if is_int8(name) and worst and worst[0] < 1:
            rows.append(f"{name}: lowest per-class agreement {worst[0]:.2%} ({worst[1]})")
    return "\n".join(rows)
