"""Import TensorFlow with Keras 2 (tf_keras): tensorflow-model-optimization needs it."""

import logging
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep oneDNN/CUDA banners off the terminal

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

# TensorFlow's own INFO lines (e.g. "Sharding callback duration" at every checkpoint, through
# absl's logger) would reach our INFO-level log
for _name in ("tensorflow", "absl"):
    logging.getLogger(_name).setLevel(logging.WARNING)

__all__ = ["tf", "keras"]
