"""Turn any image into what the model takes, as its contract says: H x W x C in [0, 1].

An array already of the model's height and width is only rescaled (and converted to gray
or RGB). Anything else (gray, BGR, BGRA, any size, a camera frame) is prepared by the
contract's preprocessing kind:

- ``resize``: the whole image (or the roi) resized to the input, in gray or RGB.
- ``object``: find the object against the backdrop (``locate``: grayscale, else the colour
  channel the object stands out in most, for an object that differs only in colour; a backdrop
  surface fitted to the border, a plane plus the lens's vignetting, robust to a table edge
  or a keyboard along one side; polarity; a threshold; bands along a side, square-on or at
  an angle, arms reaching in from a side to the garment, and black fill at the edges (a
  warped picture's corners) left out and the surface fitted again without them; the largest
  blob), then frame it as the training data were.
  One channel: the object's signal, bright on black (a dark garment on a light backdrop
  becomes bright, as Fashion-MNIST negated its photos), the backdrop's texture below a floor
  dropped, stood upright when it is mirror-symmetric at a tilt (``upright``), longest side
  filling the input, centred, contrast stretched. Three channels: the object's box widened
  to the input's aspect ratio, in RGB. ``found`` is False when nothing stands out (one
  channel is then black, three the whole picture), and also
  when the segmentation is not sound (the object runs off the frame, or clutter at the edge
  outweighs it): then the image is a best guess, and a user interface should say so.

Colour input images are in OpenCV's order (BGR, BGRA); colour model inputs are RGB.

The steps, one module each, importing only the ones before them: ``pixels`` (check, convert,
resize), ``stats`` (robust statistics), ``backdrop`` (the surface fitted to the border),
``clutter`` (fill, bands and arms at the edges), ``tilt`` (``upright``), ``locating``
(``locate``: the object's box) and ``framing`` (``prepare``). Everything is importable from
``runtime.preprocess``.
"""

from .backdrop import (RIM, SEGMENTS, SUBSETS, border_geometry, fit_background, least_squares, plane, radius2, ring,
                       surface_design)
from .clutter import (BAND_COVER, BAND_FIT, BAND_GAP, FILL_DEPTH, FILL_LEVEL, MAX_BAND, NECK, REACH, arms,
                      edges_touched, fill, side_views, straight_bands, straight_line)
from .framing import TEXTURE_FLOOR, Prepared, find_object, frame_like_dataset, object_crop, object_signal, prepare
from .locating import (MARGIN, MERGE_ROUNDS, MIN_CONTRAST, TEXTURE_THRESHOLD, WORK_SIZE, Located, Standout, departure,
                       locate, object_box, small_copy, stand_out)
from .pixels import (CV_DTYPES, SUPPORTED_DTYPES, resize, resize_whole, shrink, to_channels, to_gray, to_unit,
                     validate)
from .stats import median, otsu, quantiles, share, spread
from .tilt import (ELONGATION, KEEP, MAX_TILT, MIN_TILT, SYMMETRY, TILT_SIZE, extent, principal_axes, symmetry,
                   turned, upright)

__all__ = [
    # framing: the entry point
    "prepare", "Prepared", "find_object", "object_signal", "object_crop", "frame_like_dataset", "TEXTURE_FLOOR",
    # pixels
    "validate", "to_gray", "to_channels", "to_unit", "resize", "resize_whole", "shrink", "SUPPORTED_DTYPES",
    "CV_DTYPES",
    # stats
    "quantiles", "median", "otsu", "share", "spread",
    # backdrop
    "fit_background", "plane", "ring", "border_geometry", "surface_design", "least_squares", "radius2", "SEGMENTS",
    "SUBSETS", "RIM",
    # clutter
    "fill", "straight_bands", "arms", "edges_touched", "side_views", "straight_line", "BAND_COVER", "MAX_BAND",
    "BAND_GAP", "BAND_FIT", "REACH", "NECK", "FILL_LEVEL", "FILL_DEPTH",
    # tilt
    "upright", "turned", "symmetry", "extent", "principal_axes", "MAX_TILT", "SYMMETRY", "MIN_TILT", "TILT_SIZE",
    "ELONGATION", "KEEP",
    # locating
    "locate", "Located", "object_box", "small_copy", "departure", "Standout", "stand_out", "WORK_SIZE",
    "MIN_CONTRAST", "MARGIN", "MERGE_ROUNDS", "TEXTURE_THRESHOLD",
]
