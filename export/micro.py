"""TensorFlow Lite for Microcontrollers: the int8 model as C++ source for a firmware build.

``python -m export --format tflm`` writes ``NAME_tflm.cc`` (the int8 TFLite flatbuffer as an
aligned array, and the labels) and ``NAME_tflm.h`` in ``namespace NAME_tflm`` (input size and quantization, the labels,
the tensor arena's size and a function that registers exactly the model's operators with a
``tflite::MicroMutableOpResolver``). The arena is what TFLM's own interpreter (the
``tflite-micro`` package, its RecordingMicroAllocator) allocates for the model, checked by
running the model in an arena of exactly that size. The parity gate runs the array read back
from the ``.cc`` in that interpreter (``MicroBackend``): the bytes a board would flash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from runtime.contract import Contract
from runtime.metadata import ModelError, ModelInfo

ALIGN = 16  # TFLM reads the flatbuffer in place: 16-byte alignment, as its examples declare
BYTE = re.compile(rb"0x([0-9a-f]{2})")


def interpreter(flatbuffer: bytes, arena: int | None = None):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(flatbuffer, arena_size=arena)


def op_names(flatbuffer: bytes) -> list[str]:
    """The builtin operators the model uses, as MicroMutableOpResolver's methods name them (CONV_2D -> Conv2D)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(flatbuffer, 0)
    names = {getattr(schema.BuiltinOperator, n): n for n in dir(schema.BuiltinOperator) if not n.startswith("_")}
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    used = sorted({names[max(c.BuiltinCode(), c.DeprecatedBuiltinCode())] for c in codes})
    return ["".join(part.capitalize() if not part[0].isdigit() else part.upper() for part in name.split("_"))
            for name in used]


def arena_bytes(flatbuffer: bytes, sample: np.ndarray) -> int:
    """The tensor arena TFLM allocates for the model (its RecordingMicroAllocator's total, read from
    what it prints on the C stderr), proven by one inference in an arena of exactly that size."""
    probe = interpreter(flatbuffer)
    probe.set_input(sample, 0)
    probe.invoke()
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            probe.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode(errors="replace")
    found = re.search(r"Arena allocation total (\d+) bytes", text)
    if not found:
        raise RuntimeError(f"tflite-micro printed no arena size: {text[:300]!r}")
    arena = int(found[1])
    exact = interpreter(flatbuffer, arena)
    exact.set_input(sample, 0)
    exact.invoke()
    return arena


def c_string(text: str) -> str:
    """A C++ string literal of ``text``'s UTF-8 bytes: printable ASCII as it is (``?`` escaped against
    trigraphs), every other byte as three octal digits."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\?' else
                         f"\\{chr(b)}" if chr(b) in '"\\?' else f"\\{b:03o}" for b in text.encode()) + '"'


def comment(text: str) -> str:
    """``text`` safe inside a // comment: one line."""
    return " ".join(str(text).split())


def sources(flatbuffer: bytes, contract: Contract, metadata: dict, arena: int,
            namespace: str) -> tuple[str, str]:
    """(header, source) of the model for a firmware build."""
    quant = metadata["input"]["quantization"]
    h, w, c = contract.image_shape
    ops = op_names(flatbuffer)
    header = f"""// {namespace}.h: an int8 image classifier for TensorFlow Lite for Microcontrollers, written by
// `python -m export --format tflm` (model {comment(metadata.get("model_version", "unknown"))}).
// Input: {h}x{w}x{c} int8 ({contract.color}, framed as `{contract.preprocessing}`), q = round(pixel / 255 /
// kInputScale) + kInputZeroPoint. Output: {len(contract.labels)} int8 scores, one per label of kLabels.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

namespace {namespace} {{

constexpr int kInputHeight = {h};
constexpr int kInputWidth = {w};
constexpr int kInputChannels = {c};
constexpr float kInputScale = {quant["scale"]!r}f;
constexpr int kInputZeroPoint = {quant["zero_point"]};
// Measured by tflite-micro's RecordingMicroAllocator, and the model ran in exactly this many bytes.
constexpr size_t kTensorArenaSize = {arena};
constexpr int kNumLabels = {len(contract.labels)};
extern const char* const kLabels[kNumLabels];
extern const unsigned char kModel[];
extern const unsigned int kModelSize;

constexpr int kNumOps = {len(ops)};
// Registers the model's operators, and only those: {", ".join(ops)}.
inline TfLiteStatus AddOps(tflite::MicroMutableOpResolver<kNumOps>& resolver) {{
{"".join(f"  TF_LITE_ENSURE_STATUS(resolver.Add{op}());{chr(10)}" for op in ops)}  return kTfLiteOk;
}}

}}  // namespace {namespace}
"""
    rows = [", ".join(f"0x{b:02x}" for b in flatbuffer[i:i + 16]) for i in range(0, len(flatbuffer), 16)]
    body = ",\n  ".join(rows)
    labels = ",\n  ".join(c_string(label) for label in contract.labels)
    source = f"""// {namespace}.cc: written by `python -m export --format tflm`; see {namespace}.h.
#include "{namespace}.h"

namespace {namespace} {{

const char* const kLabels[kNumLabels] = {{
  {labels}}};

alignas({ALIGN}) const unsigned char kModel[] = {{
  {body}}};
const unsigned int kModelSize = {len(flatbuffer)};

}}  // namespace {namespace}
"""
    return header, source


def read_array(source: Path) -> bytes:
    """The model's bytes, read back from the ``kModel`` array of a written ``.cc``."""
    text = source.read_bytes()
    start = text.index(b"kModel[] = {")
    return bytes(int(b, 16) for b in BYTE.findall(text[start:text.index(b"};", start)]))


MAX_ARENA = 64 << 20  # no microcontroller has more RAM than this


class MicroBackend:
    """The parity gate's runner for the ``.cc``: its array in TFLM's interpreter, one image a call, in
    the measured arena; the contract, the arena and the array's checksum from the ``.json`` beside it."""

    def __init__(self, path: Path):
        meta = path.with_suffix(".json")
        try:
            self.info = ModelInfo.from_json(meta.read_text(), meta)
            flatbuffer = read_array(path)
        except (OSError, ValueError) as e:
            raise ModelError(f"{path}: cannot read the model's array or its {meta.name} ({e}); re-export it with "
                             "`python -m export --format tflm`") from e
        tflm = self.info.raw.get("tflm")
        arena = tflm.get("arena_bytes") if isinstance(tflm, dict) else None
        if type(arena) is not int or not 0 < arena <= MAX_ARENA:
            raise ModelError(f"{meta}: tflm.arena_bytes must be a whole number of bytes up to {MAX_ARENA}, got "
                             f"{arena!r}; re-export with `python -m export --format tflm`")
        self.info.check_integrity(path, flatbuffer)  # the array's SHA-256
        self.size_bytes, self.arena = len(flatbuffer), arena  # the flash the model takes, not the source's
        try:
            self.interpreter = interpreter(flatbuffer, arena)
            inp, out = self.interpreter.get_input_details(0), self.interpreter.get_output_details(0)
        except (RuntimeError, ValueError) as e:
            raise ModelError(f"{path}: TFLite Micro cannot run it in {arena} bytes ({e}); re-export it") from e
        self.info.check_graph(list(inp["shape"]), list(out["shape"]), path)
        self.scale, self.zero = float(inp["quantization_parameters"]["scales"][0]), \
            int(inp["quantization_parameters"]["zero_points"][0])
        self.out_scale = float(out["quantization_parameters"]["scales"][0])
        self.out_zero = int(out["quantization_parameters"]["zero_points"][0])

    def run(self, batch: np.ndarray) -> np.ndarray:
        q = np.clip(np.rint(batch / self.scale + self.zero), -128, 127).astype(np.int8)
        scores = []
        for image in q:
            self.interpreter.set_input(image[None], 0)
            self.interpreter.invoke()
            scores.append(self.interpreter.get_output(0)[0])
        return (np.array(scores, np.float32) - self.out_zero) * self.out_scale


def export_tflm(int8_tflite: Path, path: Path, contract: Contract, metadata: dict) -> Path:
    """``path``: the ``.cc``; the ``.h`` and our metadata (``.json``: the contract, the arena, flash
    and RAM) beside it. From the int8 TFLite's flatbuffer (without its appended zip: a board needs no labels file)."""
    from runtime.files import atomic_path, write_text
    from runtime.integrity import tflite_flatbuffer
    from runtime.metadata import read_tflite_metadata

    flatbuffer = tflite_flatbuffer(int8_tflite, int8_tflite.read_bytes())
    ours = json.loads(read_tflite_metadata(int8_tflite))
    sample = np.full((1, *contract.image_shape), ours["input"]["quantization"]["zero_point"], np.int8)
    arena = arena_bytes(flatbuffer, sample)
    header, source = sources(flatbuffer, contract, ours, arena, path.stem)  # NAME_tflm: a C++ identifier
    write_text(path.with_suffix(".h"), header)
    meta = {**metadata, "input": ours["input"], "integrity": {"sha256": hashlib.sha256(flatbuffer).hexdigest()},
            "tflm": {"arena_bytes": arena, "model_bytes": len(flatbuffer), "ops": op_names(flatbuffer)}}
    write_text(path.with_suffix(".json"), json.dumps(meta, indent=1))
    with atomic_path(path) as tmp:
        tmp.write_text(source)
        if read_array(tmp) != flatbuffer:
            raise RuntimeError(f"{path}: the array does not read back as the model")
    return path
