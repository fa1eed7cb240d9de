"""Lightweight Fashion-MNIST predictor: numpy + onnxruntime (LiteRT for .tflite), no TensorFlow."""

from runtime.labels import CLASS_NAMES
from runtime.metadata import ModelError, ModelInfo
from runtime.predictor import Prediction, Predictor

__all__ = ["CLASS_NAMES", "ModelError", "ModelInfo", "Prediction", "Predictor"]
