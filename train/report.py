"""Evaluation on the official test set, train_report.json, and the plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.files import atomic_path


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (y_true.astype(int), y_pred.astype(int)), 1)
    return matrix


def classification_metrics(probs: np.ndarray, y_true: np.ndarray, labels: tuple[str, ...]) -> dict:
    """Accuracy, log loss, per-class precision/recall/F1 and the confusion matrix."""
    y_pred = probs.argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    true_pos = np.diag(matrix).astype(float)
    precision = np.divide(true_pos, matrix.sum(0), out=np.zeros(len(true_pos)), where=matrix.sum(0) > 0)
    recall = np.divide(true_pos, matrix.sum(1), out=np.zeros(len(true_pos)), where=matrix.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall,
                   out=np.zeros(len(true_pos)), where=(precision + recall) > 0)
    picked = np.clip(probs[np.arange(len(y_true)), y_true.astype(int)], 1e-7, 1.0)
    return {
        "test_accuracy": float((y_pred == y_true).mean()),
        "test_loss": float(-np.log(picked).mean()),
        "per_class": {name: {"precision": round(float(p), 4), "recall": round(float(r), 4),
                             "f1": round(float(f), 4)}
                      for name, p, r, f in zip(labels, precision, recall, f1)},
        "confusion_matrix": matrix.tolist(),
    }


def save_figure(fig, path: Path, dpi: int) -> None:
    """Save through a temporary file: an interrupted run never leaves a truncated PNG."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve(values: list) -> np.ndarray:
    """A history's values as floats; an undefined one (None in the JSON) is a gap."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def plot_curves(histories: dict[str, dict], path: Path) -> None:
    """Training and validation accuracy and loss, float then QAT epochs in sequence."""
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    offset = 0
    for stage, history in histories.items():
        epochs = np.arange(1, len(history.get("loss", [])) + 1) + offset
        for ax, metric in zip(axes, ("accuracy", "loss")):
            ax.plot(epochs, curve(history.get(metric, [])), marker=".", label=f"{stage} train")
            ax.plot(epochs, curve(history.get(f"val_{metric}", [])), marker=".", label=f"{stage} validation")
        offset += len(epochs)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Training (validation split from the training set)")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, labels: tuple[str, ...], path: Path, title: str) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = matrix.max() / 2
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                color="white" if value > threshold else "black")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def plot_samples(images: np.ndarray, labels: np.ndarray, names: tuple[str, ...], path: Path,
                 per_class: int = 8) -> None:
    """A grid with ``per_class`` training images of every class, labelled: one mosaic, one row a class."""
    plt = _figure()
    h, w = images.shape[1:3]
    gap = max(1, h // 14)
    mosaic = np.full((len(names) * (h + gap), per_class * (w + gap), *images.shape[3:]), 255, np.uint8)
    for c in range(len(names)):
        for k, idx in enumerate(np.flatnonzero(labels == c)[:per_class]):
            mosaic[c * (h + gap):c * (h + gap) + h, k * (w + gap):k * (w + gap) + w] = images[idx]
    fig, ax = plt.subplots(figsize=(per_class * 1.1, 1.2 * len(names)))
    ax.imshow(mosaic, cmap="gray" if images.ndim == 3 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([c * (h + gap) + h / 2 for c in range(len(names))], names, fontsize=9)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title("Training images")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    plt.close(fig)
