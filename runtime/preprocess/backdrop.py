"""The backdrop: a smooth surface fitted to the frame's border, which is mostly backdrop.

The surface is a plane (an even lighting gradient) plus the lens's vignetting, fitted robustly:
a table edge or a keyboard along one side, or a garment reaching the border, leaves the rest of
the border to fit (``fit_background``). When the bands and the black fill along the sides are
known, the ring just inside them is fitted instead (``ring``). ``plane`` evaluates the surface
anywhere in the frame, at any resolution.
"""

from __future__ import annotations

import functools

import numpy as np

from .pixels import cv2
from .stats import quantiles

RIM = 2  # pixels (of the small copy) between the fill or a band and the ring the backdrop is fitted to

# The border in eight segments: the top's left and right halves, the bottom's, the left side's
# upper and lower halves, the right side's. A band along a side (a table edge, a keyboard)
# covers that side and the adjacent halves of the two sides it meets, so each subset leaves
# out one side with those halves; the first keeps all.
SEGMENTS = ("top-left", "top-right", "bottom-left", "bottom-right", "left-upper", "left-lower",
            "right-upper", "right-lower")
SUBSETS = np.array([[1, 1, 1, 1, 1, 1, 1, 1],
                    [0, 0, 1, 1, 0, 1, 0, 1],   # without the top
                    [1, 1, 0, 0, 1, 0, 1, 0],   # without the bottom
                    [0, 1, 0, 1, 0, 0, 1, 1],   # without the left
                    [1, 0, 1, 0, 1, 1, 0, 0]],  # without the right
                   np.float32)


def radius2(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared distance from the frame's centre (x, y in [0, 1)), 1 in the corners: a lens's
    vignetting darkens the frame about in proportion."""
    return ((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.5


def surface_design(where: np.ndarray) -> np.ndarray:
    """The surface's design matrix (1, x, y, radius2) at the pixels of the mask ``where``, with
    x and y normalised to [0, 1) (see fit_background)."""
    h, w = where.shape
    yy, xx = np.nonzero(where)
    return np.stack([np.ones(len(xx)), xx / w, yy / h, radius2(xx / w, yy / h)], 1).astype(np.float32)


@functools.lru_cache(maxsize=8)
def border_geometry(h: int, w: int):
    """For an h x w image: border mask, surface design matrix (1, x, y, radius2), segment
    membership, and the inverse normal matrices of the five SUBSETS (frames keep their size:
    cached).

    Only called on ``locate``'s small copy (at most about WORK_SIZE pixels a side), so an
    entry stays under a megabyte and the cache under ten."""
    band = max(1, min(h, w) // 24)
    sides = np.zeros((len(SEGMENTS), h, w), bool)
    left, top = w // 2, h // 2
    sides[0, :band, :left], sides[1, :band, left:] = True, True
    sides[2, -band:, :left], sides[3, -band:, left:] = True, True
    sides[4, :top, :band], sides[5, top:, :band] = True, True
    sides[6, :top, -band:], sides[7, top:, -band:] = True, True
    border = sides.any(0)
    design = surface_design(border)
    side_of = sides[:, border].astype(np.float32)  # (8, n): which segment each border pixel is on
    gram = (side_of[:, None, :] * design.T[None]) @ design  # (8, 4, 4)
    inverse = np.linalg.inv(np.einsum("ks,sij->kij", SUBSETS, gram) + 1e-6 * np.eye(design.shape[1]))
    return border, design, side_of, inverse.astype(np.float32)


def least_squares(design: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.linalg.solve(design.T @ design + 1e-6 * np.eye(design.shape[1]), design.T @ values)


def fit_background(small: np.ndarray, tolerance: float = 0.05, exclude: np.ndarray | None = None) -> np.ndarray:
    """Coefficients (a, b, c, d) of the backdrop surface a + b*x + c*y + d*radius2(x, y), x and y
    in [0, 1): an even lighting gradient and the lens's vignetting, d <= 0 (a plane alone reads a
    vignetted frame's bright centre as a bright object).

    Fitted to the frame's border, which is mostly backdrop. A table edge or a keyboard can
    cover one side and the ends of the two sides it meets, so the surface is fitted to the
    whole border and to each subset without one side and those ends (SUBSETS), and to no
    slope at all (a plain backdrop at the border's median level), and the fit that explains
    most border pixels (within ``tolerance``) wins, refitted on those. When the bands and fill
    along the sides are known (``exclude``: a mask of ``small``), the ring just inside the rest
    of the picture is fitted instead (``ring``).
    Normalised coordinates make it independent of the resolution.
    """
    border, design, side_of, inverse = border_geometry(*small.shape)
    inside = None if exclude is None else ring(exclude)
    if inside is None:
        values = small[border]
        moment = side_of @ (design * values[:, None])  # (8, 4)
        candidates = (inverse @ (SUBSETS @ moment)[..., None])[..., 0]  # (5, 4)
    else:
        design, values = surface_design(inside), small[inside]
        candidates = least_squares(design, values)[None]
    # and a plain backdrop at the median level: the fit when the object covers much of the
    # border (an image filled by the garment, as a product photo or the dataset's own)
    (level,) = quantiles(values, 0.5)
    candidates = np.concatenate([candidates, np.float32([[level, 0, 0, 0]])])
    inliers = np.abs(values[:, None] - design @ candidates.T) <= tolerance  # (n, 6 or 2)
    best = inliers[:, np.argmax(np.count_nonzero(inliers, axis=0))]
    coef = candidates[0]
    if np.count_nonzero(best) >= 3:
        coef = least_squares(design[best], values[best])
        if coef[3] > 0:  # corners brighter than the centre: no lens does that (folds of cloth do)
            coef = np.append(least_squares(design[best, :3], values[best]), 0.0)
    return coef.astype(np.float32)


def ring(exclude: np.ndarray, width: int = 3) -> np.ndarray | None:
    """The pixels RIM to RIM + ``width`` inside the picture that ``exclude`` leaves (the frame's
    edge is an edge of it too): the backdrop next to a band or fill, clear of their blurred
    rim. None without OpenCV or when there are too few."""
    if cv2 is None:
        return None
    def erode(image: np.ndarray, iterations: int) -> np.ndarray:  # beyond the frame's edge: not the picture
        return cv2.erode(image, None, iterations=iterations, borderType=cv2.BORDER_CONSTANT, borderValue=0)

    picture = erode((~exclude).astype(np.uint8), RIM)
    inside = (picture & ~erode(picture, width)).astype(bool)
    return inside if np.count_nonzero(inside) >= 20 else None


def plane(coef: np.ndarray, shape: tuple[int, int], box: tuple[int, int, int, int] | None = None,
          step: int = 1) -> np.ndarray:
    """The backdrop surface (see fit_background) over ``box`` (x0, y0, x1, y1) of an image of
    ``shape``, sampled at the centres of ``step`` x ``step`` blocks."""
    h, w = shape
    x0, y0, x1, y1 = box or (0, 0, w, h)
    xs = (np.arange(x0, x1 - step + 1, step, dtype=np.float32) + (step - 1) / 2) / w
    ys = (np.arange(y0, y1 - step + 1, step, dtype=np.float32) + (step - 1) / 2) / h
    return coef[0] + coef[1] * xs[None, :] + coef[2] * ys[:, None] + coef[3] * radius2(xs[None, :], ys[:, None])
