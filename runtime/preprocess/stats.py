"""Robust statistics of pixel values (order statistics, the median, Otsu's threshold, a mask's
share, a robust spread), each by one partial sort or one pass, for speed."""

from __future__ import annotations

import numpy as np


def quantiles(values: np.ndarray, *fractions: float) -> list[float]:
    """Order statistics by one partial sort (np.percentile costs several times more)."""
    flat = values.ravel()
    ks = [min(len(flat) - 1, int(f * len(flat))) for f in fractions]
    part = np.partition(flat, ks)
    return [float(part[k]) for k in ks]


def median(values: np.ndarray) -> np.float64:
    """np.median's value (the mean of the two middle values of an even count) by one partial
    sort (np.median costs several times more on a short array). A NumPy float64, as
    np.median's: a Python float would leave ``straight_bands``' line in float32 (NEP 50)."""
    middle = [(values.size - 1) // 2, values.size // 2]
    low, high = np.partition(values.ravel(), middle)[middle]
    return (np.float64(low) + np.float64(high)) / 2


def otsu(values: np.ndarray, bins: int = 64) -> float:
    """Otsu's threshold: the cut that best splits ``values`` into two classes (object and
    surface texture), so a blotchy desk does not leak into the object."""
    low, high = float(values.min()), float(values.max())
    width = (high - low) / bins or 1.0
    index = np.minimum(((values - low) / width).astype(np.intp), bins - 1)
    hist = np.bincount(index.ravel(), minlength=bins)
    centres = low + width * (np.arange(bins) + 0.5)
    weight = np.cumsum(hist)
    mean = np.cumsum(hist * centres)
    total, total_mean = weight[-1], mean[-1]
    apart = weight * (total - weight)  # 0 where a class is empty: no cut there
    between = np.divide((total_mean * weight - mean * total) ** 2, apart, out=np.full(bins, -1.0), where=apart > 0)
    return float(centres[np.argmax(between[:-1])])


def share(mask: np.ndarray) -> float:
    """The share of ``mask`` that is True (as its mean, at a fraction of the cost)."""
    return np.count_nonzero(mask) / mask.size


def spread(values: np.ndarray) -> float:
    """A robust standard deviation: 1.4826 x the median absolute deviation (0 when empty)."""
    if values.size == 0:
        return 0.0
    (median,) = quantiles(values, 0.5)
    (mad,) = quantiles(np.abs(values - median), 0.5)
    return 1.4826 * mad
