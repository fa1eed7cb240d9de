"""A checksum of a model's graph, embedded in its metadata and verified when it is loaded.

A flipped bit in the weights often still loads and silently changes the answers; the
SHA-256 of the graph's bytes (everything but the metadata) catches it. What is hashed:

- ONNX: the serialized ``graph`` field (number 7) of the ModelProto, as stored in the file
  (the metadata lives in another field, so writing it changes nothing hashed);
- TFLite: the flatbuffer, i.e. the file's bytes before the appended metadata zip;
- OpenVINO IR: the ``.xml`` before its ``<rt_info>`` (where the metadata is, written last), then
  the weights, the ``.bin`` beside it.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

ONNX_GRAPH_FIELD = 7  # ModelProto.graph


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def onnx_graph_bytes(data: bytes) -> bytes:
    """The ModelProto's graph field, read from the protobuf wire format (top level only)."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(data, pos)
            if field == ONNX_GRAPH_FIELD:
                if pos + size > len(data):
                    raise ValueError("truncated graph")
                return data[pos:pos + size]
            pos += size
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    raise ValueError("no graph in the ONNX file")


def tflite_flatbuffer(path: Path, data: bytes) -> bytes:
    """The file's bytes before the appended metadata zip (all of it when there is none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            start = min(info.header_offset for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError):
        return data
    return data[:start]


def openvino_graph(path: Path, data: bytes) -> bytes:
    """The IR's layers and edges (the ``.xml`` before ``<rt_info>``; its length first, so no byte can move
    between the two files unseen), then its weights (the ``.bin``). Nothing may follow ``</rt_info>`` but
    ``</net>``: OpenVINO reads other sections there (a legacy ``<pre-process>``) that would change the answers."""
    start, end = data.rfind(b"<rt_info>"), data.rfind(b"</rt_info>")
    if start < 0 or end < start:
        raise ValueError("no <rt_info> in the OpenVINO IR")
    if data[end + len(b"</rt_info>"):].strip() != b"</net>":
        raise ValueError("the OpenVINO IR has more after its <rt_info> than </net>")
    return len(data[:start]).to_bytes(8, "little") + data[:start] + path.with_suffix(".bin").read_bytes()


def graph_digest(path: Path, data: bytes | None = None) -> str:
    """SHA-256 (hex) of the model's graph bytes; ValueError when the file cannot be parsed."""
    path = Path(path)
    data = path.read_bytes() if data is None else data
    graph = {".onnx": onnx_graph_bytes, ".xml": lambda d: openvino_graph(path, d)}.get(
        path.suffix.lower(), lambda d: tflite_flatbuffer(path, d))(data)
    return hashlib.sha256(graph).hexdigest()
