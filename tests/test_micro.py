"""The C++ that `python -m export --format tflm` writes: it compiles (g++, against a stand-in for TFLM's op
resolver header: the real one needs TFLM's source tree), holds the model byte for byte and every label as
it is, whatever the label's characters; and the runner refuses a tampered array or metadata."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from export.micro import MicroBackend, read_array, sources
from runtime.contract import Contract
from runtime.integrity import tflite_flatbuffer
from runtime.metadata import ModelError
from runtime.predictor import BUNDLED

LABELS = ('say "hi"', "back\\slash", "trigraph??/", "tab\there", "*/ comment", "ä é 中", "plain")
RESOLVER = """#pragma once
typedef int TfLiteStatus;
constexpr TfLiteStatus kTfLiteOk = 0;
#define TF_LITE_ENSURE_STATUS(x) do { TfLiteStatus s_ = (x); if (s_ != kTfLiteOk) return s_; } while (0)
namespace tflite {
template <unsigned int N> class MicroMutableOpResolver {
 public:
%s
};
}  // namespace tflite
"""
MAIN = """#include <cstdio>
#include "fashion_tflm.h"
int main() {
  tflite::MicroMutableOpResolver<fashion_tflm::kNumOps> resolver;
  if (fashion_tflm::AddOps(resolver) != kTfLiteOk) return 1;
  for (int i = 0; i < fashion_tflm::kNumLabels; ++i) std::printf("%s%c", fashion_tflm::kLabels[i], 0);
  std::fwrite(fashion_tflm::kModel, 1, fashion_tflm::kModelSize, stdout);
  return 0;
}
"""


@pytest.fixture(scope="module")
def flatbuffer():
    path = BUNDLED["int8.tflite"]
    return tflite_flatbuffer(path, path.read_bytes())


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")
def test_the_sources_compile_and_hold_the_model_and_every_label(flatbuffer, tmp_path):
    contract = Contract(LABELS, 28, 28, 1)
    meta = {"model_version": "1\n#error injected", "input": {"quantization": {"scale": 1 / 255, "zero_point": -128}}}
    header, source = sources(flatbuffer, contract, meta, 36688, "fashion_tflm")
    ops = [line.split("resolver.")[1].split("(")[0] for line in header.splitlines() if "resolver.Add" in line]
    stub = tmp_path / "tensorflow/lite/micro/micro_mutable_op_resolver.h"
    stub.parent.mkdir(parents=True)
    stub.write_text(RESOLVER % "\n".join(f"  TfLiteStatus {op}() {{ return kTfLiteOk; }}" for op in ops))
    (tmp_path / "fashion_tflm.h").write_text(header)
    (tmp_path / "fashion_tflm.cc").write_text(source)
    (tmp_path / "main.cc").write_text(MAIN)
    for standard in ("c++11", "c++17"):  # C++11 and 14 still read trigraphs
        built = subprocess.run(["g++", f"-std={standard}", "-Wall", "-Werror", "-I", str(tmp_path), "-o",
                                str(tmp_path / "main"), str(tmp_path / "main.cc"), str(tmp_path / "fashion_tflm.cc")],
                               capture_output=True, text=True)
        assert built.returncode == 0, built.stderr[-3000:]
        out = subprocess.run([str(tmp_path / "main")], capture_output=True).stdout
        parts = out.split(b"\0")
        assert [p.decode() for p in parts[:len(LABELS)]] == list(LABELS)
        assert b"\0".join(parts[len(LABELS):]) == flatbuffer


def exported_micro(flatbuffer: bytes, out: Path) -> Path:
    """fashion_tflm.cc / .json for the bundled model, as the export writes them (without TensorFlow)."""
    import hashlib

    from runtime.metadata import read_tflite_metadata

    ours = json.loads(read_tflite_metadata(BUNDLED["int8.tflite"]))
    contract = Contract.from_metadata(ours)
    _, source = sources(flatbuffer, contract, ours, 36688, "fashion_tflm")
    (out / "fashion_tflm.cc").write_text(source)
    meta = {**ours, "integrity": {"sha256": hashlib.sha256(flatbuffer).hexdigest()},
            "tflm": {"arena_bytes": 36688, "model_bytes": len(flatbuffer), "ops": []}}
    (out / "fashion_tflm.json").write_text(json.dumps(meta))
    return out / "fashion_tflm.cc"


def test_the_runner_refuses_a_tampered_array_or_bad_metadata(flatbuffer, tmp_path):
    source = exported_micro(flatbuffer, tmp_path)
    assert MicroBackend(source).size_bytes == len(flatbuffer) == len(read_array(source))
    good_source, good_meta = source.read_text(), json.loads(source.with_suffix(".json").read_text())
    start = good_source.index("0x", len(good_source) // 2)
    byte = good_source[start:start + 4]
    source.write_text(good_source[:start] + ("0x00" if byte != "0x00" else "0x01") + good_source[start + 4:])
    with pytest.raises(ModelError, match="SHA-256"):
        MicroBackend(source)
    source.write_text(good_source)
    for arena in (0, -1, True, "36688", 36688.5, 10 ** 12, None):
        source.with_suffix(".json").write_text(json.dumps({**good_meta, "tflm": {"arena_bytes": arena}}))
        with pytest.raises(ModelError, match="arena_bytes"):
            MicroBackend(source)
    source.with_suffix(".json").write_text(json.dumps({**good_meta, "labels": good_meta["labels"][:5]}))
    with pytest.raises(ModelError, match="labels"):
        MicroBackend(source)
    source.with_suffix(".json").unlink()
    with pytest.raises(ModelError, match="re-export"):
        MicroBackend(source)
