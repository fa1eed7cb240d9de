"""The client matrix: every exported file in every runtime that consumes it, on Fashion-MNIST's
official test images: our `Predictor` (LiteRT, onnxruntime, OpenVINO), OpenVINO on the ONNX files,
TensorFlow Lite for Microcontrollers' interpreter on the C array (in this venv), and in
.venv-consumers (benchmarks/consumers.py) MediaPipe Tasks and tflite-support's metadata reader.
Side by side: loads or not,
accuracy, top-1 agreement with the QAT model (the export's qat_test_predictions.npy), latency
per image (one image a call), file size. Prints a table and writes JSON.

    make consumers
    python -m export --format all --model artifacts/qat_model.h5
    python benchmarks/clients.py artifacts --out artifacts/clients.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export.formats import exported  # noqa: E402
from runtime.backends import model_bytes  # noqa: E402
from runtime.files import write_json  # noqa: E402

CONSUMERS = ROOT / ".venv-consumers/bin/python"


def consumer(python: Path, *args) -> dict:
    done = subprocess.run([str(python), str(ROOT / "benchmarks/consumers.py"), *map(str, args)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed_top1(predict_one, images: np.ndarray, labels: tuple[str, ...]) -> dict:
    """``predict_one`` (one image -> probabilities) over ``images``, one a call, after one warm-up call."""
    predict_one(images[0])
    started = time.perf_counter()
    top1 = [labels[int(np.argmax(predict_one(image)))] for image in images]
    return {"top1": top1, "ms_per_image": round(1000 * (time.perf_counter() - started) / len(images), 4)}


def ours(path: Path, images: np.ndarray) -> dict:
    """Our Predictor, one thread (model-shaped pixels: no framing)."""
    from runtime import Predictor

    predictor = Predictor(path, num_threads=1)
    if predictor.contract.channels == 3:  # a gray data set given to an RGB model (BGR order for OpenCV images)
        images = np.repeat(images[..., None], 3, axis=3)
    return timed_top1(lambda image: predictor.predict(image).probabilities, images, predictor.labels)


def micro(path: Path, images: np.ndarray) -> dict:
    """The C array of the .cc in TensorFlow Lite for Microcontrollers' interpreter (its reference kernels)."""
    from export.micro import MicroBackend

    backend = MicroBackend(path)
    contract = backend.info.contract
    result = timed_top1(lambda image: backend.run(contract.model_input(image[None]))[0], images, contract.labels)
    return {**result, "size_bytes": backend.size_bytes}  # the flash the model takes, not the C source's size


def openvino_direct(path: Path, images: np.ndarray, labels: tuple[str, ...]) -> dict:
    """OpenVINO's own API on an ONNX file, float32 precision, one thread."""
    import openvino as ov

    model = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    x = images[..., None].astype(np.float32) / 255
    return timed_top1(lambda image: model(image[None], share_inputs=False)[0][0], x, labels)


def row(client: str, name: str, path: Path, result: dict, labels: tuple[str, ...], truth: np.ndarray,
        golden: np.ndarray) -> dict:
    size = result.get("size_bytes") or model_bytes(path)
    entry = {"client": client, "format": name, "file": path.name, "size_kb": round(size / 1024, 1)}
    if "error" in result:
        return {**entry, "loads": False, "error": result["error"]}
    index = np.array([labels.index(label) if label in labels else -1 for label in result["top1"]])
    return {**entry, "loads": True, "accuracy": float(np.mean(index == truth)),
            "agreement_with_qat": float(np.mean(index == golden)), "ms_per_image": result["ms_per_image"]}


def matrix(models: Path, limit: int | None, python: Path) -> dict:
    from train.data import CLASS_NAMES, load

    data = load(allow_download=False)
    images, truth = data.test_images[:limit], data.test_labels[:limit]
    golden = np.load(models / "qat_test_predictions.npy")[:limit]
    files = exported(models)
    if not files:
        raise SystemExit(f"no exported models in {models}: run `python -m export --format all`")
    rows, metadata = [], {}
    runtime_of = {".tflite": "LiteRT", ".onnx": "onnxruntime", ".xml": "OpenVINO"}
    for name, path in files.items():
        if name == "tflm":
            rows.append(row("tflite-micro interpreter", name, path, micro(path, images), CLASS_NAMES, truth, golden))
        else:
            rows.append(row(f"Predictor ({runtime_of[path.suffix]})", name, path, ours(path, images), CLASS_NAMES,
                            truth, golden))
    for name in ("onnx-float", "onnx-int8"):
        if name in files:
            rows.append(row("OpenVINO on the ONNX file", name, files[name],
                            openvino_direct(files[name], images, CLASS_NAMES), CLASS_NAMES, truth, golden))
    with tempfile.TemporaryDirectory() as work:
        rgb = Path(work) / "rgb.npy"
        np.save(rgb, np.repeat(images[..., None], 3, axis=3))
        if "mediapipe" in files:
            rows.append(row("MediaPipe Tasks ImageClassifier", "mediapipe", files["mediapipe"],
                            consumer(python, "mediapipe", files["mediapipe"], rgb), CLASS_NAMES, truth, golden))
        if "tflite-int8" in files:  # MediaPipe takes uint8 or float32 RGB input only: it refuses this one
            rows.append(row("MediaPipe Tasks ImageClassifier", "tflite-int8", files["tflite-int8"],
                            consumer(python, "mediapipe", files["tflite-int8"], rgb), CLASS_NAMES, truth, golden))
    for name, path in files.items():
        if path.suffix == ".tflite":
            found = consumer(python, "metadata", path)
            metadata[name] = {"labels_found": found.get("labels") == list(CLASS_NAMES),
                              **{k: found.get(k) for k in ("color_space", "mean", "std", "files", "error")
                                 if k in found}}
    return {"images": len(images), "rows": rows, "tflite_metadata": metadata}


def print_table(result: dict) -> None:
    print(f"\n{'client':<34}{'file':<28}{'loads':>6}{'accuracy':>10}{'agree QAT':>11}{'ms/image':>10}{'KB':>8}")
    for r in result["rows"]:
        if r["loads"]:
            print(f"{r['client']:<34}{r['file']:<28}{'yes':>6}{r['accuracy']:>10.2%}{r['agreement_with_qat']:>11.2%}"
                  f"{r['ms_per_image']:>10.3f}{r['size_kb']:>8.1f}")
        else:
            print(f"{r['client']:<34}{r['file']:<28}{'no':>6}  {r['error'][:90]}")
    print(f"({result['images']} official test images, one a call, one thread)\n\ntflite-support MetadataDisplayer:")
    for name, m in result["tflite_metadata"].items():
        print(f"  {name:<14} labels {'found' if m['labels_found'] else 'NOT found'}, {m.get('color_space')}, "
              f"mean {m.get('mean')} std {m.get('std')}, files {m.get('files')} {m.get('error', '')}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", type=Path, help="a folder of `python -m export --format all`'s files")
    p.add_argument("--limit", type=int, default=2000,
                   help="the first N test images (default 2,000: TFLM's reference kernels take ~20 ms each)")
    p.add_argument("--consumers", type=Path, default=CONSUMERS, help="the consumers' python (make consumers)")
    p.add_argument("--out", type=Path, default=None, help="JSON (default: MODELS/clients.json)")
    args = p.parse_args(argv)
    if not args.consumers.is_file():
        p.error(f"{args.consumers} is missing: run `make consumers`")
    result = matrix(args.models, args.limit, args.consumers)
    print_table(result)
    out = args.out or args.models / "clients.json"
    write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
