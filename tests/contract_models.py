"""Small ONNX models of any input shape, built with onnx.helper (not by our exporter).

They stand for a model made by another tool that carries our documented metadata: a
linear softmax classifier over the flattened pixels, with seeded random weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.contract import Contract


def metadata(labels, height, width, channels, kind="resize", **extra) -> dict:
    contract = Contract(tuple(labels), height, width, channels, preprocessing=kind)
    return {**contract.to_metadata(), "model_version": "test", **extra}


def make_model(path: Path, labels=("a", "b", "c", "d", "e"), height=32, width=32, channels=3, *,
               kind="resize", meta: dict | None = None, classes: int | None = None, layout="NHWC",
               logits=False, seed=0) -> Path:
    """Write an ONNX classifier; ``meta`` replaces the metadata, ``classes`` the graph's output size."""
    onnx = pytest.importorskip("onnx", reason="builds test models: pip install '.[test]'")
    from onnx import TensorProto, helper, numpy_helper

    classes = classes or len(labels)
    shape = [None, channels, height, width] if layout == "NCHW" else [None, height, width, channels]
    size = height * width * channels
    weights = np.random.default_rng(seed).normal(0, 3 / np.sqrt(size), (size, classes)).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    nodes.append(helper.make_node("Identity" if logits else "Softmax", ["logits"], ["probabilities"],
                                  **({} if logits else {"axis": 1})))
    graph = helper.make_graph(nodes, "contract_test",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, classes])],
                              [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if meta is None:
        meta = metadata(labels, height, width, channels, kind)
        if layout == "NCHW":
            meta["input"].update(layout="NCHW", shape=[-1, channels, height, width])
        if logits:
            meta["output"]["kind"] = "logits"
    helper.set_model_props(model, {"fashion_edge": json.dumps(meta)})
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def reference(path: Path, batch: np.ndarray) -> np.ndarray:
    """The model's probabilities computed with numpy alone, for an NHWC float batch."""
    onnx = pytest.importorskip("onnx", reason="reads test models: pip install '.[test]'")
    from onnx import numpy_helper

    model = onnx.load(path)
    weights = numpy_helper.to_array(model.graph.initializer[0])
    meta = json.loads(model.metadata_props[0].value)
    if meta["input"].get("layout") == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    logits = batch.reshape(len(batch), -1) @ weights
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def eight_bit_types(path) -> set[str]:
    """The 8-bit integer types of an ONNX model's constants (weights, zero points)."""
    onnx = pytest.importorskip("onnx", reason="reads the model's graph: pip install '.[test]'")
    types = {onnx.TensorProto.DataType.Name(t.data_type) for t in onnx.load(path).graph.initializer}
    return types & {"INT8", "UINT8"}
