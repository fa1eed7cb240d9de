"""`make models`: the bundled models, each trained with its recipe, exported, through the parity gate, measured,
and copied into runtime/models/NAME/ with its reports and its card.

    python tools/bundle_models.py [NAME ...] [--out artifacts/models]

For each model: `python -m train` with its recipe into OUT/NAME (hours on 2 cores for both: run it in the
background; run it again after a stop and training resumes from its last finished epoch, finished stages are
not trained again), `python -m export --format all` (the parity gate: a failure stops here, nothing is
copied), `python -m train.camera_eval` on the camera sets, `python -m runtime.bench` for latency, then
`python -m export.results` writes the card (card.md) from those reports. Measure on a quiet machine: the
card's latency is what `runtime.bench` saw.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "runtime" / "models"
# name -> python -m train's arguments; the first is the default (runtime.predictor.BUNDLED_MODELS, same order).
# A model joins when its recipe meets its bar (docs/notes.md: the lean net's runs so far).
RECIPES = {
    "edge": ["--arch", "edge"],
}
FILES = ("fashion_int8.tflite", "fashion_int8.onnx", "fashion_float.onnx", "parity.json", "train_report.json",
         "qat_test_predictions.npy")
CAMERA_SETS = "standard,desk,everyday"
CAMERA_FRAMES = 500  # a set: 50 a class


def run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], check=True, cwd=ROOT)


def bundle(name: str, out: Path) -> Path:
    run_dir = out / name
    run("-m", "train", *RECIPES[name], "--out", str(run_dir))
    run("-m", "export", "--model", str(run_dir / "qat_model.h5"), "--format", "all")
    run("-m", "train.camera_eval", "--model", str(run_dir / "fashion_int8.tflite"), "--n", str(CAMERA_FRAMES),
        "--sets", CAMERA_SETS, "--out", str(run_dir))
    run("-m", "runtime.bench", "--models", *(str(run_dir / f) for f in FILES[:3]), "--out", str(run_dir / "bench.json"))
    run("-m", "export.results", str(run_dir))
    target = MODELS / name
    target.mkdir(parents=True, exist_ok=True)
    for file in FILES:
        shutil.copy2(run_dir / file, target / file)
    shutil.copy2(run_dir / "results.md", target / "card.md")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME", help=f"which ({', '.join(RECIPES)}; default: all)")
    p.add_argument("--out", type=Path, default=ROOT / "artifacts" / "models", help="the training runs")
    args = p.parse_args(argv)
    if unknown := [name for name in args.names if name not in RECIPES]:
        p.error(f"no recipe for {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    for name in args.names or RECIPES:
        try:
            print(f"bundled {name}: {bundle(name, args.out)}", flush=True)
        except subprocess.CalledProcessError as e:
            print(f"error: {name}: {' '.join(map(str, e.cmd[1:]))} exited with {e.returncode}; nothing copied",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
