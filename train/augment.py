"""Batch-wise training augmentation as TensorFlow ops, run inside tf.data."""

from __future__ import annotations

from dataclasses import dataclass

from train.keras_env import keras, tf


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True  # garments are left-right symmetric enough; +0.3 pp in trials
    shift: float = 0.07  # fraction of the side (2 pixels of 28); the data are centred: small shifts
    cutout: float = 0.29  # side of the erased square, fraction of the side (8 of 28 pixels); 0: off
    cutout_prob: float = 0.3
    # What camera preprocessing leaves behind (see runtime.preprocess): a garment held at a
    # slant, framed a little looser or tighter, with other contrast, and sensor noise.
    rotation: float = 0.0  # degrees, either way
    zoom: float = 0.0  # fraction, either way
    gamma: float = 0.0  # log-uniform gamma in [exp(-g), exp(g)]
    noise: float = 0.0  # std of additive Gaussian noise, in [0, 1] pixel units
    # what moves into view at the border when an image is shifted, rotated or zoomed out:
    # black for Fashion-MNIST (its background); the edge pixels repeated for photos
    fill: str = "constant"


PRESETS = {
    "standard": AugmentConfig(),
    "camera": AugmentConfig(rotation=12.0, zoom=0.1, gamma=0.3, noise=0.03),
    # photos of your own classes: framed by hand, so off centre, tilted, nearer or farther,
    # under other light; flips only where the classes allow them (train.recipe decides)
    "photo": AugmentConfig(shift=0.1, cutout=0.25, rotation=10.0, zoom=0.15, gamma=0.2, noise=0.02,
                           fill="nearest"),
}


def random_cutout(x: tf.Tensor, fraction: float, prob: float) -> tf.Tensor:
    """Zero one random square (``fraction`` of the shorter side) in a ``prob`` fraction of the images."""
    batch, height, width = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    size = round(fraction * min(x.shape[1], x.shape[2]))
    cy = tf.random.uniform([batch, 1, 1], 0, height, dtype=tf.int32)
    cx = tf.random.uniform([batch, 1, 1], 0, width, dtype=tf.int32)
    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    inside = (tf.abs(rows - cy) <= size // 2) & (tf.abs(cols - cx) <= size // 2)
    apply = tf.random.uniform([batch, 1, 1]) < prob
    keep = tf.cast(~(inside & apply), x.dtype)
    return x * keep[..., None]


def make_augmenter(config: AugmentConfig):
    """A function (images, labels) -> (images, labels) for ``Dataset.map`` on batches."""
    layers = []
    if config.flip:
        layers.append(keras.layers.RandomFlip("horizontal"))
    if config.rotation:
        layers.append(keras.layers.RandomRotation(config.rotation / 360, fill_mode=config.fill))
    if config.zoom:
        layers.append(keras.layers.RandomZoom(config.zoom, fill_mode=config.fill))
    if config.shift:
        layers.append(keras.layers.RandomTranslation(config.shift, config.shift, fill_mode=config.fill))
    pipeline = keras.Sequential(layers) if layers else None

    def augment(x: tf.Tensor, y: tf.Tensor):
        if pipeline is not None:
            x = pipeline(x, training=True)
        if config.gamma:
            g = tf.exp(tf.random.uniform([tf.shape(x)[0], 1, 1, 1], -config.gamma, config.gamma))
            x = tf.pow(tf.clip_by_value(x, 1e-6, 1.0), g)
        if config.noise:
            x = tf.clip_by_value(x + tf.random.normal(tf.shape(x), stddev=config.noise), 0.0, 1.0)
        if config.cutout:
            x = random_cutout(x, config.cutout, config.cutout_prob)
        return x, y

    return augment
