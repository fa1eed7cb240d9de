"""Predictor: the three-line API an app embeds."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.backends import open_backend
from runtime.metadata import ModelInfo
from runtime.preprocess import prepare

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    confidence: float
    probabilities: np.ndarray = field(repr=False)
    labels: tuple[str, ...] = field(repr=False, default=())
    object_found: bool = True  # False: nothing stood out from the background

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
        prepared = prepare(image, roi)
        probabilities = self.backend.run(prepared.image[None, :, :, None])
        return self._prediction(probabilities[0], prepared.found)

    def predict_batch(self, images: Sequence[np.ndarray] | np.ndarray,
                      roi: tuple[int, int, int, int] | None = None) -> list[Prediction]:
        """Classify several images in one inference call (a list, or a stacked array)."""
        if len(images) == 0:
            raise ValueError("predict_batch needs at least one image")
        prepared = [prepare(image, roi) for image in images]
        batch = np.stack([p.image for p in prepared])[..., None]
        probabilities = self.backend.run(batch)
        return [self._prediction(p, found.found) for p, found in zip(probabilities, prepared)]

    def _prediction(self, probabilities: np.ndarray, found: bool) -> Prediction:
        index = int(np.argmax(probabilities))
        return Prediction(index, self.labels[index], float(probabilities[index]),
                          probabilities, self.labels, found)
