"""The parity gate: every exported format against the QAT Keras model, on the full test set
(Fashion-MNIST's 10,000 images, or a folder's test or validation images, however few)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.formats import FORMATS
from runtime.backends import open_backend
from train.report import confusion_matrix

MAX_INT8_ACCURACY_DROP = 0.005  # int8 may be at most 0.5 pp below the QAT model...
MIN_INT8_AGREEMENT = 0.99  # ...and must agree with it on top-1 for 99% of the images
REFERENCE = "keras-qat"


def run_backend(path: Path, images: np.ndarray, chunk: int = 1000) -> np.ndarray:
    backend = open_backend(path)
    return np.concatenate([backend.run(images[i:i + chunk]) for i in range(0, len(images), chunk)])


def compare(probs: np.ndarray, reference: np.ndarray, labels: np.ndarray, names: tuple[str, ...],
            size_bytes: int) -> dict:
    matrix = confusion_matrix(labels, probs.argmax(1), len(names))
    diff = np.abs(probs - reference)
    return {
        "accuracy": float((probs.argmax(1) == labels).mean()),
        "top1_agreement": float((probs.argmax(1) == reference.argmax(1)).mean()),
        "mean_abs_prob_diff": float(diff.mean()),
        "max_abs_prob_diff": float(diff.max()),
        "size_kb": round(size_bytes / 1024, 1),
        "per_class_recall": {name: round(float(matrix[i, i] / max(matrix[i].sum(), 1)), 4)
                             for i, name in enumerate(names)},
        "confusion_matrix": matrix.tolist(),
    }


def evaluate(reference_probs: np.ndarray, reference_size: int, models: dict[str, Path],
             images: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict:
    """Metrics per format; ``models`` maps a format name (e.g. "tflite-int8") to its file."""
    results = {REFERENCE: compare(reference_probs, reference_probs, labels, names, reference_size)}
    for name, path in models.items():
        results[name] = compare(run_backend(path, images), reference_probs, labels, names, path.stat().st_size)
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


def thresholds(images: int | None = None) -> tuple[float, float]:
    """(max int8 accuracy drop, min int8 top-1 agreement) for a test set of ``images``.

    The fixed thresholds are fractions of a large test set (0.5 pp of 10,000 images is 50);
    on a small one they would fail on a single image, so one image's worth is always allowed."""
    if not images:
        return MAX_INT8_ACCURACY_DROP, MIN_INT8_AGREEMENT
    one = 1.0 / images + 1e-9
    return max(MAX_INT8_ACCURACY_DROP, one), min(MIN_INT8_AGREEMENT, 1.0 - one)


def failures(results: dict, images: int | None = None) -> list[str]:
    """Why the gate fails (empty when it passes); ``images``: the test set's size."""
    max_drop, min_agreement = thresholds(images)
    ref = results[REFERENCE]["accuracy"]
    problems = []
    for name, r in results.items():
        if not is_int8(name):
            continue
        if r["accuracy"] < ref - max_drop:
            problems.append(f"{name}: accuracy {r['accuracy']:.2%} is more than "
                            f"{max_drop:.1%} below the QAT model's {ref:.2%}")
        if r["top1_agreement"] < min_agreement:
            problems.append(f"{name}: top-1 agreement {r['top1_agreement']:.2%} < {min_agreement:.0%}")
    return problems


def table(results: dict) -> str:
    rows = [f"{'format':<14}{'accuracy':>10}{'agree':>9}{'mean|dp|':>11}{'max|dp|':>10}{'size KB':>10}"]
    for name, r in results.items():
        rows.append(f"{name:<14}{r['accuracy']:>10.2%}{r['top1_agreement']:>9.2%}"
                    f"{r['mean_abs_prob_diff']:>11.5f}{r['max_abs_prob_diff']:>10.4f}{r['size_kb']:>10.1f}")
    return "\n".join(rows)
