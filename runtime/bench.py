"""python -m runtime.bench: latency, throughput, load time and memory of the bundled models,
side by side with what a user would otherwise call (raw onnxruntime / LiteRT, Keras).

Columns: batch-1 Predictor.predict on a 28x28 image with one thread (median, p95) and with
all threads; the backend's raw call on the same prepared input and the ratio; batch-64
throughput; preprocessing alone and predict() of a 640x480 BGR camera frame; peak RSS.

Prints a table and writes JSON. Alternatives are timed interleaved with the Predictor, call
by call, so that their ratio holds even on a noisy shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from runtime.predictor import BUNDLED, Predictor
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
        feed = {backend.input_name: x}
        return lambda: backend.session.run(None, feed)
    interp = backend.interpreter
    q = backend.quantize(x)

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
    image = images[0]
    x = prepare(image).image[None, :, :, None]
    t = interleaved({"predict": lambda: predictor.predict(image), "raw": raw_call(predictor, x)}, repeats)
    result = {"model": path.name, "size_kb": round(path.stat().st_size / 1024, 1),
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
    result["preprocess_640x480"] = stats(timed(lambda: prepare(frame), max(repeats // 4, 50)))
    result["frame_640x480"] = stats(timed(lambda: predictor.predict(frame), max(repeats // 4, 50)))
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def bench_keras(keras_model: Path | None, images: np.ndarray, repeats: int) -> dict | None:
    """The seeds' way: the float Keras model, per image, with predict() and a direct call.

    Run in its own process: TensorFlow's thread pools would otherwise slow the Predictor.
    """
    try:
        from train.keras_env import keras
        from train.model import build
    except ImportError:
        return None
    model = keras.models.load_model(keras_model, compile=False) if keras_model else build("edge")
    x = images[:1, :, :, None].astype(np.float32) / 255
    n = max(repeats // 20, 20)
    t = interleaved({"keras_predict": lambda: model.predict(x, verbose=0),
                     "keras_call": lambda: model(x, training=False)}, n)
    return {"model": str(keras_model or "untrained edge architecture (same compute)"),
            **{name: stats(v) for name, v in t.items()}}


def sample_inputs():
    """Real test images and a camera-like frame when the data are here; else synthetic."""
    try:
        from train.data import load

        images = load(allow_download=False).test_images[:64]
    except Exception:  # the bench must run on a runtime-only install too
        rng = np.random.default_rng(0)
        images = np.zeros((64, 28, 28), np.uint8)
        images[:, 4:24, 8:20] = rng.integers(100, 255, (64, 20, 12), dtype=np.uint8)
    try:
        from runtime.camera_sim import render

        frame = render(images[0], np.random.default_rng(0))
    except RuntimeError:  # no OpenCV: a plain frame with a dark block
        frame = np.full((480, 640, 3), 200, np.uint8)
        frame[120:360, 220:420] = 40
    return images, frame


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
    k = results.get("keras")
    if k:
        rows.append("\nThe float Keras model per image (the seeds' way), in its own process:")
        rows.append(f"  model.predict {k['keras_predict']['median_us']:.0f} µs, direct call "
                    f"{k['keras_call']['median_us']:.0f} µs; Predictor.predict ({k['predictor_model']}) "
                    f"{k['predictor_median_us']:.0f} µs -> {k['speedup_vs_predict']}x faster than predict, "
                    f"{k['speedup_vs_call']}x than a call")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.bench", description=__doc__)
    p.add_argument("--repeats", type=int, default=2000)
    p.add_argument("--out", type=Path, default=Path("artifacts/bench.json"))
    p.add_argument("--keras-model", type=Path, default=None,
                   help="float Keras model to compare with (default: artifacts/float_model.h5 if present)")
    p.add_argument("--no-keras", action="store_true")
    p.add_argument("--models", type=Path, default=None,
                   help="directory with fashion_*.onnx/.tflite (default: the bundled models)")
    # internal: bench one model (or Keras) on the inputs in an .npz, print JSON
    p.add_argument("--one", nargs=2, type=Path, metavar=("MODEL", "INPUTS"), help=argparse.SUPPRESS)
    p.add_argument("--keras-in", type=Path, metavar="INPUTS", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        inputs = np.load(args.one[1])
        print(json.dumps(bench_model(args.one[0], inputs["images"], inputs["frame"], args.repeats)))
        return 0
    if args.keras_in:
        inputs = np.load(args.keras_in)
        print(json.dumps(bench_keras(args.keras_model, inputs["images"], args.repeats)))
        return 0
    images, frame = sample_inputs()
    inputs_file = args.out.with_suffix(".inputs.npz")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(inputs_file, images=images, frame=frame)
    results = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                           "python": platform.python_version()},
               "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats, "models": []}
    for name, bundled in BUNDLED.items():
        path = args.models / bundled.name if args.models else bundled
        if name == "int8.tflite" and not _has_litert():
            continue
        results["models"].append(run_json(["--one", str(path), str(inputs_file), "--repeats", str(args.repeats)]))
    if not args.no_keras:
        default = Path("artifacts/float_model.h5")
        keras_model = args.keras_model or (default if default.is_file() else None)
        keras = run_json(["--keras-in", str(inputs_file), "--repeats", str(args.repeats)]
                         + (["--keras-model", str(keras_model)] if keras_model else []))
        if keras:
            ours = results["models"][0]  # the default model: int8 TFLite, else int8 ONNX
            fastest = ours["predict_1thread"]["median_us"]
            results["keras"] = {**keras, "predictor_model": ours["model"], "predictor_median_us": fastest,
                                "speedup_vs_predict": round(keras["keras_predict"]["median_us"] / fastest, 1),
                                "speedup_vs_call": round(keras["keras_call"]["median_us"] / fastest, 1)}
    inputs_file.unlink()
    print(table(results))
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


def run_json(args: list[str]) -> dict | None:
    """Run this module with ``args`` in a fresh process; its last stdout line is JSON."""
    proc = subprocess.run([sys.executable, "-m", "runtime.bench", *args], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _has_litert() -> bool:
    import importlib.util

    return importlib.util.find_spec("ai_edge_litert") is not None


if __name__ == "__main__":
    sys.exit(main())
