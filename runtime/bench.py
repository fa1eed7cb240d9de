"""python -m runtime.bench: latency, throughput, load time and memory of exported models (the
bundled ones by default), side by side with the backend's own call (raw onnxruntime / LiteRT).

Inputs come from --inputs (an .npz of model-shaped images and a camera frame) or are made
from each model's metadata. The comparison with Keras, which needs TensorFlow and the data
set, lives in benchmarks/keras_latency.py and writes the same JSON plus a "keras" entry.

Columns: batch-1 Predictor.predict on one model-shaped image with one thread (median, p95) and with
all threads; the backend's raw call on the same prepared input and the ratio; batch-64
throughput; preprocessing alone and predict() of a 640x480 BGR camera frame; peak RSS.

Prints a table and writes JSON. Alternatives are timed interleaved with the Predictor, call
by call, so that their ratio holds even on a noisy shared machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from runtime.backends import BACKENDS, model_bytes, to_graph
from runtime.contract import Contract
from runtime.files import write_json
from runtime.metadata import ModelError
from runtime.predictor import BUNDLED, Predictor, is_model_pixels
from runtime.preprocess import prepare

WARMUP = 50


def stats(seconds: list[float]) -> dict:
    us = np.array(seconds) * 1e6
    return {"median_us": round(float(np.median(us)), 1), "p95_us": round(float(np.percentile(us, 95)), 1)}


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Time several callables alternately, so that machine noise hits them alike."""
    for fn in fns.values():
        for _ in range(WARMUP):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def raw_call(predictor: Predictor, x: np.ndarray):
    """The backend's own API, called directly on an already prepared input."""
    backend = predictor.backend
    if hasattr(backend, "session"):
        feed = {backend.input_name: to_graph(predictor.contract, x)}
        return lambda: backend.session.run(None, feed)
    if hasattr(backend, "compiled"):  # OpenVINO
        graph_input = to_graph(predictor.contract, x)
        return lambda: backend.compiled(graph_input)
    interp = backend.interpreter
    q = to_graph(predictor.contract, backend.as_input(x))

    def run():
        interp.set_tensor(backend.input_index, q)
        interp.invoke()
        return interp.get_tensor(backend.output_index)
    return run


def bench_model(path: Path, images: np.ndarray, frame: np.ndarray, repeats: int) -> dict:
    """All measurements for one model file (run in its own process for a clean peak RSS)."""
    start = time.perf_counter()
    predictor = Predictor(path, num_threads=1)
    load_s = time.perf_counter() - start
    contract = predictor.contract
    if images.ndim == 3 and contract.channels == 3:  # gray images for an RGB model (a MediaPipe file)
        images = np.repeat(images[..., None], 3, axis=3)
    image = images[0]
    if not is_model_pixels(image, contract):
        raise ValueError(f"{path}: the inputs' images are {image.shape}, the model takes {contract.image_shape}")
    x = contract.from_unit(prepare(image, contract).image[None])
    t = interleaved({"predict": lambda: predictor.predict(image), "raw": raw_call(predictor, x)}, repeats)
    result = {"model": path.name, "size_kb": round(model_bytes(path) / 1024, 1),
              "load_ms": round(load_s * 1e3, 1),
              "predict_1thread": stats(t["predict"]), "raw_1thread": stats(t["raw"]),
              "overhead_ratio": round(float(np.median(t["predict"]) / np.median(t["raw"])), 3)}
    all_threads = Predictor(path, num_threads=os.cpu_count())
    for _ in range(WARMUP):
        all_threads.predict(image)
    result["predict_all_threads"] = stats(timed(lambda: all_threads.predict(image), repeats))
    batch = images[:64]
    all_threads.predict_batch(batch)
    seconds = np.median(timed(lambda: all_threads.predict_batch(batch), max(repeats // 20, 10)))
    result["batch64_images_per_s"] = round(64 / float(seconds))
    result["preprocess_640x480"] = stats(timed(lambda: prepare(frame, contract), max(repeats // 4, 50)))
    result["frame_640x480"] = stats(timed(lambda: predictor.predict(frame), max(repeats // 4, 50)))
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def synthetic_inputs(contract: Contract, n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs shaped by the model's contract, when no --inputs are given: ``n`` uint8 images of
    its input shape (a bright block on black) and a 640x480 BGR frame with one dark object."""
    rng = np.random.default_rng(seed)
    h, w, c = contract.image_shape
    images = np.zeros((n, h, w, c), np.uint8)
    images[:, h // 6:h - h // 6, w // 4:w - w // 4] = rng.integers(100, 255, (n, 1, 1, c), dtype=np.uint8)
    images = images[..., 0] if c == 1 else images
    try:
        from simulator.camera_sim import render

        frame = render(images[0] if c == 1 else images[0, ..., 0], rng)
    except (ImportError, RuntimeError):  # no simulator (a wheel install) or no OpenCV: a plain frame, a dark block
        frame = np.full((480, 640, 3), 200, np.uint8)
        frame[120:360, 220:420] = 40
    return images, frame


RUNTIMES = {".tflite": "ai_edge_litert", ".xml": "openvino"}  # optional: a model without its runtime is skipped


def model_files(paths: list[Path]) -> list[Path]:
    """Model files, directories expanded: the bundled names first (the default model leads), then the rest."""
    files = []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        named = [path / b.name for b in BUNDLED.values() if (path / b.name).is_file()]
        files += named + sorted({f for f in path.iterdir() if f.suffix in BACKENDS} - set(named))
    return [f for f in files if f.suffix not in RUNTIMES or importlib.util.find_spec(RUNTIMES[f.suffix])]


def table(results: dict) -> str:
    rows = [f"{'model':<22}{'size KB':>8}{'load ms':>9}{'1 thr med µs':>13}{'p95':>8}"
            f"{'raw med µs':>11}{'ratio':>7}{'all thr µs':>11}{'b64 img/s':>10}{'prep µs':>9}"
            f"{'frame µs':>9}{'RSS MB':>8}"]
    for r in results["models"]:
        rows.append(f"{r['model']:<22}{r['size_kb']:>8}{r['load_ms']:>9}"
                    f"{r['predict_1thread']['median_us']:>13}{r['predict_1thread']['p95_us']:>8}"
                    f"{r['raw_1thread']['median_us']:>11}{r['overhead_ratio']:>7}"
                    f"{r['predict_all_threads']['median_us']:>11}{r['batch64_images_per_s']:>10}"
                    f"{r['preprocess_640x480']['median_us']:>9}{r['frame_640x480']['median_us']:>9}"
                    f"{r['peak_rss_mb']:>8}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.bench", description=__doc__)
    p.add_argument("--models", type=Path, nargs="+", default=None,
                   help="model files or directories of them (default: the bundled models)")
    p.add_argument("--inputs", type=Path, default=None,
                   help="an .npz with 'images' (uint8, the models' input shape) and 'frame' (a BGR "
                        "camera frame); default: synthetic inputs shaped by each model's metadata")
    p.add_argument("--repeats", type=int, default=2000)
    p.add_argument("--out", type=Path, default=Path("artifacts/bench.json"))
    # internal: bench one model on the inputs in an .npz, print JSON
    p.add_argument("--one", nargs=2, type=Path, metavar=("MODEL", "INPUTS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 20:
        p.error("--repeats must be at least 20")
    if args.one:
        inputs = np.load(args.one[1])
        print(json.dumps(bench_model(args.one[0], inputs["images"], inputs["frame"], args.repeats)))
        return 0
    try:
        models = model_files(args.models or list(BUNDLED.values()))
        contracts = {path: Predictor(path, num_threads=1).contract for path in models}
    except (ModelError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not models:
        print("error: no model to benchmark (.tflite needs LiteRT: pip install 'fashion-edge[tflite]')",
              file=sys.stderr)
        return 2
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                           "python": platform.python_version()},
               "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
               "inputs": str(args.inputs) if args.inputs else "synthetic", "models": []}
    with tempfile.TemporaryDirectory() as work:
        for path, contract in contracts.items():
            inputs = args.inputs
            if inputs is None:
                inputs = Path(work) / f"{path.stem}.npz"
                images, frame = synthetic_inputs(contract)
                np.savez(inputs, images=images, frame=frame)
            results["models"].append(run_json(["--one", str(path), str(inputs), "--repeats", str(args.repeats)]))
    print(table(results))
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


def run_json(args: list[str]) -> dict:
    """Run this module with ``args`` in a fresh process; its last stdout line is JSON."""
    proc = subprocess.run([sys.executable, "-m", "runtime.bench", *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"python -m runtime.bench {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
