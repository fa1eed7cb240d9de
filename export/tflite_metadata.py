"""TensorFlow Lite Model Metadata: what MediaPipe Tasks, tflite-support and Android Studio read.

Every ``.tflite`` we write carries two descriptions of itself, in this order:

1. the standard metadata (``metadata_schema.fbs`` of MediaPipe / tflite-support, file identifier
   M001): name, version, the input's colour space, size and normalization, the output's labels
   as the associated file ``labels.txt``; a ``TFLITE_METADATA`` buffer inside the flatbuffer;
2. the flatbuffer's SHA-256 (``runtime.integrity``), which therefore covers the standard metadata;
3. a zip appended to the flatbuffer holding ``labels.txt`` and our own contract
   (``runtime.metadata.METADATA_MEMBER``, with that checksum): the associated files of the standard,
   which stores them the same way.

The metadata flatbuffer is built with the ``flatbuffers`` package from the published schema:
MediaPipe's own writer does not import beside TensorFlow 2.21 and tflite-support's pins a
protobuf that breaks ``onnx``. ``FIELDS`` gives the slot of each field we write (its position
in the schema; a union takes two: its type, then its value).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import flatbuffers
import numpy as np

from runtime.contract import KINDS, Contract
from runtime.metadata import METADATA_MEMBER

LABELS_FILE = "labels.txt"
METADATA_NAME = "TFLITE_METADATA"  # the Model.metadata entry readers look for
IDENTIFIER = b"M001"
PARSER_VERSION = "1.0.0"  # every field written here is in the schema's first version

FIELDS = {  # table -> {field: (slot, type)}, from metadata_schema.fbs
    "ModelMetadata": {"name": (0, "str"), "description": (1, "str"), "version": (2, "str"),
                      "subgraph_metadata": (3, "tables"), "author": (4, "str"),
                      "associated_files": (6, "tables"), "min_parser_version": (7, "str")},
    "SubGraphMetadata": {"input_tensor_metadata": (2, "tables"), "output_tensor_metadata": (3, "tables")},
    "TensorMetadata": {"name": (0, "str"), "description": (1, "str"), "content": (3, "table"),
                       "process_units": (4, "tables"), "stats": (5, "table"), "associated_files": (6, "tables")},
    "Content": {"content_properties_type": (0, "u8"), "content_properties": (1, "table")},
    "FeatureProperties": {},
    "ImageProperties": {"color_space": (0, "i8"), "default_size": (1, "table")},
    "ImageSize": {"width": (0, "u32"), "height": (1, "u32")},
    "ProcessUnit": {"options_type": (0, "u8"), "options": (1, "table")},
    "NormalizationOptions": {"mean": (0, "floats"), "std": (1, "floats")},
    "Stats": {"max": (0, "floats"), "min": (1, "floats")},
    "AssociatedFile": {"name": (0, "str"), "description": (1, "str"), "type": (2, "i8")},
}
CONTENT = {"FeatureProperties": 1, "ImageProperties": 2}  # union ContentProperties
NORMALIZATION = 1  # union ProcessUnitOptions
COLOR_SPACE = {1: 2, 3: 1}  # channels -> ColorSpaceType (GRAYSCALE, RGB)
TENSOR_AXIS_LABELS, UNKNOWN_FILE = 2, 0  # AssociatedFileType
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the associated files' date: none, so that exports are reproducible


@dataclass
class Table:
    kind: str  # a key of FIELDS
    values: dict = field(default_factory=dict)


def table(kind: str, **values) -> Table:
    unknown = set(values) - set(FIELDS[kind])
    if unknown:
        raise KeyError(f"{kind} has no field {sorted(unknown)} in FIELDS")
    return Table(kind, values)


def _write(builder: flatbuffers.Builder, t: Table) -> int:
    """Children first (a flatbuffer is built back to front), then the table; its offset."""
    offsets = {}
    for name, value in t.values.items():
        kind = FIELDS[t.kind][name][1]
        if kind == "str":
            offsets[name] = builder.CreateString(value)
        elif kind == "floats":
            offsets[name] = builder.CreateNumpyVector(np.asarray(value, dtype=np.float32))
        elif kind == "table":
            offsets[name] = _write(builder, value)
        elif kind == "tables":
            children = [_write(builder, child) for child in value]
            builder.StartVector(4, len(children), 4)
            for child in reversed(children):
                builder.PrependUOffsetTRelative(child)
            offsets[name] = builder.EndVector()
    builder.StartObject(1 + max((slot for slot, _ in FIELDS[t.kind].values()), default=-1))
    for name, value in t.values.items():
        slot, kind = FIELDS[t.kind][name]
        if name in offsets:
            builder.PrependUOffsetTRelativeSlot(slot, offsets[name], 0)
        else:
            {"u8": builder.PrependUint8Slot, "i8": builder.PrependInt8Slot,
             "u32": builder.PrependUint32Slot}[kind](slot, value, 0)
    return builder.EndObject()


def labels_text(labels: tuple[str, ...]) -> str:
    """``labels.txt``: one label a line, in output order."""
    for label in labels:
        if "\n" in label or "\r" in label:
            raise ValueError(f"label {label!r} holds a line break: labels.txt keeps one label a line")
    return "".join(f"{label}\n" for label in labels)


def model_metadata(contract: Contract, metadata: dict) -> Table:
    """The standard description of a model with our ``contract`` (``metadata``: ours, for its version)."""
    h, w, c = contract.image_shape
    low, high = contract.value_range
    # the input's float value is pixel * (high - low) / 255 + low, i.e. (pixel - mean) / std
    std = 255 / (high - low)
    image = table("TensorMetadata", name="image",
                  description=f"{w}x{h} {contract.color} image; framing ({contract.preprocessing}): "
                              f"{KINDS[contract.preprocessing]}",
                  content=table("Content", content_properties_type=CONTENT["ImageProperties"],
                                content_properties=table("ImageProperties", color_space=COLOR_SPACE[c],
                                                         default_size=table("ImageSize", width=w, height=h))),
                  process_units=[table("ProcessUnit", options_type=NORMALIZATION,
                                       options=table("NormalizationOptions", mean=[0.0 - low * std] * c,
                                                     std=[std] * c))],
                  stats=table("Stats", max=[high] * c, min=[low] * c))
    scores = table("TensorMetadata", name="probability",
                   description=f"the probability of each of the {len(contract.labels)} labels",
                   content=table("Content", content_properties_type=CONTENT["FeatureProperties"],
                                 content_properties=table("FeatureProperties")),
                   stats=table("Stats", max=[1.0], min=[0.0]),
                   associated_files=[table("AssociatedFile", name=LABELS_FILE, type=TENSOR_AXIS_LABELS,
                                           description="the labels, one a line, in output order")])
    return table("ModelMetadata", name="image classifier",
                 description=f"Classifies an image into {len(contract.labels)} classes: "
                             f"{', '.join(contract.labels)}."[:1000],
                 version=str(metadata.get("model_version", "unknown")), author="fashion-edge",
                 subgraph_metadata=[table("SubGraphMetadata", input_tensor_metadata=[image],
                                          output_tensor_metadata=[scores])],
                 associated_files=[table("AssociatedFile", name=METADATA_MEMBER, type=UNKNOWN_FILE,
                                         description="fashion-edge's model contract (JSON): labels, input, "
                                                     "framing, integrity; docs/model-contract.md")],
                 min_parser_version=PARSER_VERSION)


def metadata_buffer(contract: Contract, metadata: dict) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(_write(builder, model_metadata(contract, metadata)), file_identifier=IDENTIFIER)
    return bytes(builder.Output())


def with_metadata(flatbuffer: bytes, contract: Contract, metadata: dict) -> bytes:
    """``flatbuffer`` (a TFLite model) with the standard metadata as its ``TFLITE_METADATA`` buffer
    (the buffer of one it had is reused: writing it again gives the same bytes); the graph is untouched."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    entries = model.metadata or []
    entry = next((m for m in entries if m.name in (METADATA_NAME, METADATA_NAME.encode())), None)
    if entry is None:
        model.buffers.append(schema.BufferT())
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
        model.metadata = [*entries, entry]
    model.buffers[entry.buffer].data = np.frombuffer(metadata_buffer(contract, metadata), dtype=np.uint8)
    return flatbuffer_utils.convert_object_to_bytearray(model)


def append_associated_files(path: Path, contract: Contract, ours: str) -> None:
    """Append to ``path`` (a flatbuffer) the zip of its associated files: ``labels.txt`` and our contract
    (``ours``, JSON), stored uncompressed, as tflite-support's populator appends them. The members are dated
    1980-01-01 (zip's first date), so the same model and contract give the same bytes at any time."""
    with zipfile.ZipFile(path, "a") as archive:
        for name, text in ((LABELS_FILE, labels_text(contract.labels)), (METADATA_MEMBER, ours)):
            archive.writestr(zipfile.ZipInfo(name, date_time=ZIP_DATE), text)
