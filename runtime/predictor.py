"""Predictor: the three-line API an app embeds."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.backends import open_backend
from runtime.metadata import ModelInfo
from runtime.preprocess import Prepared, prepare

MODELS_DIR = Path(__file__).parent / "models"
BUNDLED = {
    "int8.tflite": MODELS_DIR / "fashion_int8.tflite",
    "int8.onnx": MODELS_DIR / "fashion_int8.onnx",
    "float.onnx": MODELS_DIR / "fashion_float.onnx",
}


def default_model() -> Path:
    """The bundled int8 model: TFLite when LiteRT is installed (faster), else ONNX."""
    if importlib.util.find_spec("ai_edge_litert") is not None:
        return BUNDLED["int8.tflite"]
    return BUNDLED["int8.onnx"]


WHOLE = Prepared(None, True, (0, 0, 28, 28))  # a 28x28 input is the object, as it is


def is_dataset_pixels(image: object) -> bool:
    """A uint8 28x28 (or 28x28x1) array: Fashion-MNIST pixels that need no preprocessing."""
    return isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape in ((28, 28), (28, 28, 1))


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    confidence: float
    probabilities: np.ndarray = field(repr=False)
    labels: tuple[str, ...] = field(repr=False, default=())
    object_found: bool = True  # False: nothing stood out from the background
    box: tuple[int, int, int, int] | None = None  # x, y, w, h of the object in the input image

    def top_k(self, k: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(self.labels[i], float(self.probabilities[i])) for i in order]


class Predictor:
    """Classify garments with an exported model (.onnx or .tflite).

    >>> from runtime import Predictor
    >>> predictor = Predictor()               # the bundled int8 model
    >>> predictor.predict(frame).label        # any gray/BGR/BGRA image or 28x28 array
    """

    def __init__(self, model_path: str | Path | None = None, *, num_threads: int | None = None,
                 spin: bool = True):
        """``num_threads``: backend threads (None: all cores); ``spin``: let onnxruntime's
        threads busy-wait between calls for the lowest latency (False saves CPU when idle;
        LiteRT's XNNPACK pool manages this itself)."""
        self.model_path = Path(model_path) if model_path is not None else default_model()
        self.backend = open_backend(self.model_path, num_threads=num_threads, spin=spin)
        self.info: ModelInfo = self.backend.info
        self.labels = self.info.labels

    def predict(self, image: np.ndarray, roi: tuple[int, int, int, int] | None = None) -> Prediction:
        if roi is None and is_dataset_pixels(image):  # the common case, on its fastest path
            return self._prediction(self.backend.run_pixels(image.reshape(1, 28, 28, 1))[0], WHOLE)
        prepared = prepare(image, roi)
        probabilities = self.backend.run(prepared.image[None, :, :, None])
        return self._prediction(probabilities[0], prepared)

    def predict_batch(self, images: Sequence[np.ndarray] | np.ndarray,
                      roi: tuple[int, int, int, int] | None = None) -> list[Prediction]:
        """Classify several images in one inference call (a list, or a stacked array)."""
        if len(images) == 0:
            raise ValueError("predict_batch needs at least one image")
        if roi is None and all(is_dataset_pixels(image) for image in images):
            pixels = np.stack(images).reshape(len(images), 28, 28, 1)
            return [self._prediction(p, WHOLE) for p in self.backend.run_pixels(pixels)]
        prepared = [prepare(image, roi) for image in images]
        batch = np.stack([p.image for p in prepared])[..., None]
        probabilities = self.backend.run(batch)
        return [self._prediction(p, prep) for p, prep in zip(probabilities, prepared)]

    def _prediction(self, probabilities: np.ndarray, prepared: Prepared) -> Prediction:
        index = int(np.argmax(probabilities))
        return Prediction(index, self.labels[index], float(probabilities[index]),
                          probabilities, self.labels, prepared.found, prepared.box)
