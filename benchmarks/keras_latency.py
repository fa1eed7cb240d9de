"""Predictor against the float Keras model per image (the seeds' way), in the same run.

Runs ``python -m runtime.bench`` on real test images (one process per model), then times
the Keras model with ``model.predict`` and a direct call in a process of its own (TensorFlow's
thread pools would otherwise slow the Predictor), and writes runtime.bench's JSON with a
"keras" entry and the speed-ups:

    python benchmarks/keras_latency.py --models artifacts --keras-model artifacts/float_model.h5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the clone: simulator/ is not installed

from runtime.bench import interleaved, stats  # noqa: E402
from runtime.files import write_json  # noqa: E402


def test_inputs(path: Path) -> None:
    """The first 64 official test images and a camera-like frame of the first one."""
    from simulator.camera_sim import render
    from train.data import load

    images = load(allow_download=False).test_images[:64]
    np.savez(path, images=images, frame=render(images[0], np.random.default_rng(0)))


def bench_keras(keras_model: Path | None, inputs: Path, repeats: int) -> dict:
    """model.predict and model(x) on one test image, interleaved call by call."""
    from train.data import load
    from train.keras_env import keras
    from train.model import build

    contract = load(allow_download=False).contract
    model = (keras.models.load_model(keras_model, compile=False) if keras_model
             else build("edge", contract.image_shape, len(contract.labels)))
    x = contract.model_input(np.load(inputs)["images"][:1])
    t = interleaved({"keras_predict": lambda: model.predict(x, verbose=0),
                     "keras_call": lambda: model(x, training=False)}, max(repeats // 20, 20))
    return {"model": str(keras_model or "untrained edge architecture (same compute)"),
            **{name: stats(v) for name, v in t.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, nargs="+", default=None, help="default: the bundled models")
    p.add_argument("--keras-model", type=Path, default=None,
                   help="the float Keras model (default: an untrained model of the same architecture)")
    p.add_argument("--repeats", type=int, default=2000)
    p.add_argument("--out", type=Path, default=Path("artifacts/bench.json"))
    p.add_argument("--keras-only", type=Path, metavar="INPUTS", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    keras_model = args.keras_model if args.keras_model and args.keras_model.is_file() else None
    if args.keras_only:
        print(json.dumps(bench_keras(keras_model, args.keras_only, args.repeats)))
        return 0
    with tempfile.TemporaryDirectory() as work:
        inputs = Path(work) / "inputs.npz"
        test_inputs(inputs)
        bench = [sys.executable, "-m", "runtime.bench", "--inputs", str(inputs), "--repeats", str(args.repeats),
                 "--out", str(args.out)] + (["--models", *map(str, args.models)] if args.models else [])
        subprocess.run(bench, check=True)
        keras = subprocess.run([sys.executable, __file__, "--keras-only", str(inputs), "--repeats",
                                str(args.repeats)] + (["--keras-model", str(keras_model)] if keras_model else []),
                               capture_output=True, text=True, check=True)
    results = json.loads(args.out.read_text())
    keras = json.loads(keras.stdout.strip().splitlines()[-1])
    ours = results["models"][0]  # the default model: int8 TFLite, else int8 ONNX
    fastest = ours["predict_1thread"]["median_us"]
    results["keras"] = {**keras, "predictor_model": ours["model"], "predictor_median_us": fastest,
                        "speedup_vs_predict": round(keras["keras_predict"]["median_us"] / fastest, 1),
                        "speedup_vs_call": round(keras["keras_call"]["median_us"] / fastest, 1)}
    write_json(args.out, results)
    print(f"\nThe float Keras model per image, in its own process: model.predict "
          f"{keras['keras_predict']['median_us']:.0f} µs, direct call {keras['keras_call']['median_us']:.0f} µs; "
          f"Predictor.predict ({ours['model']}) {fastest:.0f} µs -> {results['keras']['speedup_vs_predict']}x "
          f"faster than predict, {results['keras']['speedup_vs_call']}x than a call\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
