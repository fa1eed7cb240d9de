"""The model contract: what a model takes and what its outputs mean, written once.

Training derives a ``Contract`` from its data, export embeds ``Contract.to_metadata()`` in
every model, and everything that runs a model (Predictor, preprocessing, CLI, camera demo,
HTTP API, web page, benchmarks) reads it back with ``Contract.from_metadata``. The keys
are documented in docs/model-contract.md; a model written by any tool that carries them runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FORMAT_VERSION = 2
KNOWN_VERSIONS = (1, 2)  # 1: the first exports (28x28 gray, object framing, labels only read)
KINDS = {
    "object": "find the object against its background and frame it as the training data were",
    "resize": "resize the whole image (or the roi) to the input size",
}
LAYOUTS = ("NHWC", "NCHW")
OUTPUTS = ("probabilities", "logits")  # logits get a softmax in the runtime
CHANNELS = {1: "gray", 3: "RGB"}


class ContractError(ValueError):
    """Metadata that no model can honour; the message names the key and the fix."""


@dataclass(frozen=True)
class Contract:
    labels: tuple[str, ...]  # class names in output order
    height: int
    width: int
    channels: int  # 1: gray, 3: RGB (in that order)
    value_range: tuple[float, float] = (0.0, 1.0)  # the values pixel 0 and pixel 255 become
    preprocessing: str = "object"  # a key of KINDS
    layout: str = "NHWC"  # how the graph's input is laid out; images are always H x W x C here
    output: str = "probabilities"  # a member of OUTPUTS

    def __post_init__(self):
        if not isinstance(self.labels, tuple) or len(self.labels) < 2 or not all(
                isinstance(label, str) and label.strip() for label in self.labels):
            raise ContractError(f"labels must be a list of two or more non-empty strings, got {self.labels!r}")
        if len(set(self.labels)) != len(self.labels):
            raise ContractError(f"labels must be distinct, got {list(self.labels)}")
        if not all(isinstance(v, int) and v >= 1 for v in (self.height, self.width)):
            raise ContractError(f"input height and width must be positive integers, got "
                                f"{self.height!r} x {self.width!r}")
        if self.channels not in CHANNELS:
            raise ContractError(f"input channels must be 1 (gray) or 3 (RGB), got {self.channels!r}")
        low, high = self.value_range
        if not (math.isfinite(low) and math.isfinite(high)) or low == high:
            raise ContractError(f"input.range must be two different finite numbers, got {list(self.value_range)}")
        for name, value, allowed in (("preprocessing.kind", self.preprocessing, tuple(KINDS)),
                                     ("input.layout", self.layout, LAYOUTS), ("output.kind", self.output, OUTPUTS)):
            if value not in allowed:
                raise ContractError(f"unknown {name} {value!r}; supported: {', '.join(allowed)}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """One image as the runtime prepares it: height, width, channels."""
        return self.height, self.width, self.channels

    @property
    def graph_input_shape(self) -> tuple[int, int, int]:
        """One image as the graph takes it, in ``layout`` order."""
        if self.layout == "NCHW":
            return self.channels, self.height, self.width
        return self.image_shape

    @property
    def label_dtype(self) -> type:
        """The integer type of a class index: uint8, as Fashion-MNIST's, while the labels fit; int32 beyond 256."""
        return np.uint8 if len(self.labels) <= 256 else np.int32

    @property
    def color(self) -> str:
        return CHANNELS[self.channels]

    def from_unit(self, batch: np.ndarray) -> np.ndarray:
        """Values in [0, 1] (pixel / 255) -> the model's input range, float32."""
        low, high = self.value_range
        if (low, high) != (0.0, 1.0):
            batch = batch * np.float32(high - low) + np.float32(low)
        return np.ascontiguousarray(batch, dtype=np.float32)

    def pixel_values(self) -> np.ndarray:
        """What each uint8 level 0-255 becomes in the model's input range (a lookup table)."""
        return self.from_unit(np.arange(256, dtype=np.float32) / 255)

    def model_input(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 images (N, H, W) or (N, H, W, C) -> the float32 batch the model takes (NHWC); gray
        images given to an RGB model are repeated into its three channels."""
        values = self.pixel_values()[pixels]
        values = values if values.ndim == 4 else values[..., None]
        return np.repeat(values, 3, axis=3) if values.shape[3] < self.channels else values

    def to_metadata(self) -> dict:
        """The contract's keys of the embedded metadata (format_version 2)."""
        shape = [-1, *self.graph_input_shape]
        return {"format_version": FORMAT_VERSION,
                "labels": list(self.labels),
                "input": {"shape": shape, "layout": self.layout, "range": list(self.value_range)},
                "output": {"shape": [-1, len(self.labels)], "kind": self.output},
                "preprocessing": {"kind": self.preprocessing, "description": KINDS[self.preprocessing]}}

    @classmethod
    def from_metadata(cls, meta: dict) -> Contract:
        """Read the embedded metadata; ContractError names what is missing or wrong."""
        if not isinstance(meta, dict):
            raise ContractError("the metadata must be a JSON object")
        version = meta.get("format_version")
        if version not in KNOWN_VERSIONS:
            raise ContractError(f"unknown format_version {version!r}; this runtime reads "
                                f"{', '.join(map(str, KNOWN_VERSIONS))}: upgrade fashion-edge or re-export")
        labels = meta.get("labels")
        if not isinstance(labels, list):
            raise ContractError(f"labels must be a list of strings, got {type(labels).__name__}")
        model_input = meta.get("input")
        if not isinstance(model_input, dict):
            raise ContractError("missing input: an object with shape [-1, H, W, C] (and layout, range)")
        layout = model_input.get("layout", "NHWC")
        shape = model_input.get("shape")
        if not (isinstance(shape, list) and len(shape) == 4 and all(type(v) is int for v in shape[1:])):
            raise ContractError(f"input.shape must be [-1, H, W, C] with integer sizes, got {shape!r}")
        if layout == "NCHW":
            channels, height, width = shape[1:]
        else:
            height, width, channels = shape[1:]
        value_range = model_input.get("range", [0.0, 1.0])
        if not (isinstance(value_range, list) and len(value_range) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value_range)):
            raise ContractError(f"input.range must be [low, high], got {value_range!r}")
        if version == 1:  # every version-1 model is ours: probabilities, dataset-style framing
            kind, output = "object", "probabilities"
        else:
            preprocessing, out = meta.get("preprocessing"), meta.get("output", {})
            if not isinstance(preprocessing, dict) or "kind" not in preprocessing:
                raise ContractError(f"missing preprocessing.kind; one of {', '.join(KINDS)}")
            kind = preprocessing["kind"]
            output = out.get("kind", "probabilities") if isinstance(out, dict) else "probabilities"
        return cls(tuple(labels), height, width, channels, (float(value_range[0]), float(value_range[1])),
                   kind, layout, output)

    def check_graph(self, input_shape: list, output_shape: list) -> None:
        """Compare with the graph's own tensor shapes (None, -1 or a name: any size)."""
        def fixed(dims):
            return [int(d) if isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 else None
                    for d in dims]  # LiteRT and TFLM give numpy integers

        want = list(self.graph_input_shape)
        got = fixed(input_shape)[1:]
        if len(input_shape) != 4 or any(g is not None and g != w for g, w in zip(got, want)):
            raise ContractError(f"the metadata's input shape {[-1, *want]} ({self.layout}) differs from "
                                f"the graph's input {list(input_shape)}")
        outputs = fixed(output_shape)
        if len(output_shape) != 2:
            raise ContractError(f"the graph's output {list(output_shape)} is not (batch, classes)")
        if outputs[1] is not None and outputs[1] != len(self.labels):
            raise ContractError(f"the metadata has {len(self.labels)} labels but the graph outputs "
                                f"{outputs[1]} classes")
