"""Lightweight image-classification runtime: numpy + onnxruntime (LiteRT for .tflite), no TensorFlow."""

from runtime.contract import Contract
from runtime.metadata import ModelError, ModelInfo
from runtime.predictor import Prediction, Predictor
from runtime.roi import Roi

__all__ = ["Contract", "ModelError", "ModelInfo", "Prediction", "Predictor", "Roi"]
