"""Predictor: the three-line API an app embeds."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from runtime.backends import open_backend
from runtime.contract import Contract
from runtime.metadata import ModelError, ModelInfo
from runtime.preprocess import Prepared, prepare
from runtime.roi import Roi

MODELS_DIR = Path(__file__).parent / "models"
# The bundled models, by name (a folder of runtime/models each, with its reports): the first is the default.
BUNDLED_MODELS = ("edge",)
KINDS = ("int8.tflite", "int8.onnx", "float.onnx")


def bundled(name: str | None = None, kind: str | None = None) -> Path:
    """A bundled model's file: ``name`` one of BUNDLED_MODELS (None: the default); ``kind`` one of KINDS
    (None: int8 TFLite when LiteRT is installed, which is faster, else int8 ONNX)."""
    name = name or BUNDLED_MODELS[0]
    if name not in BUNDLED_MODELS:
        raise ModelError(f"no bundled model {name!r}; bundled: {', '.join(BUNDLED_MODELS)} (or give a model file)")
    if kind is None:
        kind = "int8.tflite" if importlib.util.find_spec("ai_edge_litert") is not None else "int8.onnx"
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    return MODELS_DIR / name / f"fashion_{kind}"


BUNDLED = {kind: bundled(kind=kind) for kind in KINDS}  # the default's files


def model_path_of(model: str | Path | None) -> Path:
    """A model file, a bundled model's name (``edge``: a bare word, no folder, no suffix) or None (the
    default) -> the file to open."""
    if model is None:
        return bundled()
    path = Path(model)
    return bundled(str(model)) if str(path) == path.name == path.stem and path.name not in ("", ".") else path


def is_model_pixels(image: object, contract: Contract) -> bool:
    """uint8 pixels already of the model's input shape (gray; colour in BGR order): no preprocessing."""
    if not (type(image) is np.ndarray and image.dtype == np.uint8):  # subclasses (np.matrix) go the long way
        return False
    h, w, c = contract.image_shape
    return image.shape == (h, w, c) or (c == 1 and image.shape == (h, w))


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    confidence: float
    probabilities: np.ndarray = field(repr=False)
    labels: tuple[str, ...] = field(repr=False, default=())
    object_found: bool = True  # False: nothing stood out, or the segmentation is not sound (a best guess)
    box: tuple[int, int, int, int] | None = None  # x, y, w, h of the object in the input image

    def top_k(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most likely labels (all of them when there are fewer), most likely first."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(self.labels[i], float(self.probabilities[i])) for i in order]


class Predictor:
    """Classify images with an exported model (.onnx or .tflite); its metadata says how.

    >>> from runtime import Predictor
    >>> predictor = Predictor()               # the bundled int8 model ("edge"), or a name or a file
    >>> predictor.predict(frame).label        # any gray/BGR/BGRA image, or the model's input shape
    """

    def __init__(self, model_path: str | Path | None = None, *, num_threads: int | None = None,
                 spin: bool = True):
        """``model_path``: an exported model file, a bundled model's name (``BUNDLED_MODELS``) or None (the
        default bundled model). ``num_threads``: backend threads (None: all cores); ``spin``: let onnxruntime's
        threads busy-wait between calls for the lowest latency (False saves CPU when idle;
        LiteRT's XNNPACK pool manages this itself)."""
        self.model_path = model_path_of(model_path)
        self.backend = open_backend(self.model_path, num_threads=num_threads, spin=spin)
        self.info: ModelInfo = self.backend.info
        self.contract: Contract = self.info.contract
        self.labels = self.contract.labels
        h, w, c = self.contract.image_shape
        self._whole = Prepared(None, True, (0, 0, w, h))  # model-shaped pixels are the object, as they are

    def predict(self, image: np.ndarray, roi: Roi | tuple[int, int, int, int] | None = None) -> Prediction:
        if roi is None and is_model_pixels(image, self.contract):  # the common case, on its fastest path
            return self._prediction(self.backend.run_pixels(self._pixels(image[None]))[0], self._whole)
        prepared = prepare(image, self.contract, roi)
        probabilities = self.backend.run(self.contract.from_unit(prepared.image[None]))
        return self._prediction(probabilities[0], prepared)

    def predict_batch(self, images: Iterable[np.ndarray] | np.ndarray,
                      roi: Roi | tuple[int, int, int, int] | None = None) -> list[Prediction]:
        """Classify several images in one inference call (a list, a stacked array or any iterable)."""
        images = list(images)
        if not images:
            raise ValueError("predict_batch needs at least one image")
        if roi is None and all(is_model_pixels(image, self.contract) for image in images):
            pixels = self._pixels(np.stack(images))
            return [self._prediction(p, self._whole) for p in self.backend.run_pixels(pixels)]
        prepared = [prepare(image, self.contract, roi) for image in images]
        probabilities = self.backend.run(self.contract.from_unit(np.stack([p.image for p in prepared])))
        return [self._prediction(p, prep) for p, prep in zip(probabilities, prepared)]

    def _pixels(self, stack: np.ndarray) -> np.ndarray:
        """(N, H, W[, C]) uint8 -> (N, H, W, C), colour from BGR to RGB."""
        if self.contract.channels == 3:
            return np.ascontiguousarray(stack[..., ::-1])
        return stack.reshape(len(stack), *self.contract.image_shape)

    def _prediction(self, probabilities: np.ndarray, prepared: Prepared) -> Prediction:
        index = int(np.argmax(probabilities))
        return Prediction(index, self.labels[index], float(probabilities[index]),
                          probabilities, self.labels, prepared.found, prepared.box)
