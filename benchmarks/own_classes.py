"""Your own classes, end to end: for each folder, `python -m train --data DIR`, then
`python -m export --format all`, then held-out accuracy through `runtime.Predictor` with
every exported model, images read from DIR/test/ by the runtime's reader (as `python -m runtime` reads them); then
the baselines of benchmarks/baselines.py on the same folder (an SVM and a logistic regression on
our model's own crops; the Keras tutorial's approach for our train + export wall time), unless
``--no-baselines``. Prints a table and writes JSON.

    python benchmarks/example_folders.py /tmp/folders
    python benchmarks/own_classes.py /tmp/folders/digits /tmp/folders/faces --out /tmp/own
    python benchmarks/own_classes.py /tmp/folders/garments --out /tmp/own_scratch -- --init scratch

Arguments after ``--`` go to `python -m train` (the defaults otherwise). Each folder needs a
test/ split (its classes, held out); the run's output goes to OUT/<folder name>/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from baselines import classic, held_out, keras_tutorial, scores  # noqa: E402
from runtime.files import write_json  # noqa: E402

MODELS = ("model_int8.tflite", "model_int8.onnx", "model_float.onnx")  # python -m export names a folder's model


def run(command: list[str], log: Path) -> float:
    """Run ``command`` (output to ``log``); its wall time in seconds; SystemExit if it fails."""
    started = time.time()
    with log.open("w") as f:
        code = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {code}); see {log}")
    return time.time() - started


def evaluate(model: Path, paths: list[Path], labels: list[str]) -> dict:
    from runtime import Predictor
    from runtime.images import BadImage, load

    predictor = Predictor(model)
    answers = []
    for path in paths:
        try:  # read as python -m runtime and the HTTP API read it
            answers.append(predictor.predict(load(path)).label)
        except BadImage:
            answers.append(None)
    return {**scores(answers, labels), "unreadable": answers.count(None)}


def one_folder(folder: Path, out: Path, train_args: list[str], baselines: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    train_s = run([python, "-m", "train", "--data", str(folder), "--out", str(out), *train_args],
                  out / "train.log")
    export_s = run([python, "-m", "export", "--format", "all", "--model", str(out / "qat_model.h5"),
                    "--out", str(out)], out / "export.log")
    report = json.loads((out / "train_report.json").read_text())
    parity = json.loads((out / "parity.json").read_text())
    paths, labels = held_out(folder)
    models = {name: evaluate(out / name, paths, labels) for name in MODELS}
    result = {"folder": str(folder), "train_args": train_args, "train_s": round(train_s, 1),
              "export_s": round(export_s, 1), "total_s": round(train_s + export_s, 1),
              "contract": report["contract"], "config": report["config"], "train_images": report["data"]["train"],
              "test_images": len(paths), "qat_report_accuracy": report["qat"]["test_accuracy"],
              "float_epochs_run": report["float"]["epochs_run"], "fit": fit(report["float"]["history"]),
              "parity_passed": parity["passed"],
              "models": models}
    if baselines:  # the classic ones see our recorded crops; the tutorial gets our wall time
        result["baselines"] = {"classic": classic(folder, report["data"]),
                               "keras_tutorial": keras_tutorial(folder, train_s + export_s)}
    return result


def fit(history: dict) -> dict:
    """How the float stage fitted: accuracy on the (augmented) training images and on the validation
    split at the epoch that was kept (the lowest validation loss: early stopping restores it)."""
    kept = min(range(len(history["val_loss"])), key=history["val_loss"].__getitem__)
    return {"train_accuracy": round(history["accuracy"][kept], 4),
            "validation_accuracy": round(history["val_accuracy"][kept], 4)}


def lead(run: dict) -> float:
    """Our int8 TFLite model's accuracy minus the best baseline's (the Keras tutorial's only if it ran)."""
    b = run["baselines"]
    others = [b["classic"]["svm"]["accuracy"], b["classic"]["logistic"]["accuracy"]]
    if not b["keras_tutorial"]["failed"]:
        others.append(b["keras_tutorial"]["accuracy"])
    return run["models"]["model_int8.tflite"]["accuracy"] - max(others)


def print_table(results: dict, baselines: bool) -> None:
    header = (f"\n{'folder':<12}{'input':>10}{'train':>7}{'test':>6}{'minutes':>9}{'float ONNX':>12}"
              f"{'fit train/val':>15}{'int8 TFLite':>13}{'int8 ONNX':>11}{'worst class (int8 TFLite)':>27}"
              f"{'parity':>8}")
    if baselines:
        header += f"{'SVM':>8}{'logistic':>10}{'Keras tutorial':>20}{'vs best':>10}"
    print(header)
    for name, r in results.items():
        c, m = r["contract"], r["models"]
        shape = "x".join(str(n) for n in c["input"]["shape"][1:])
        tfl = m["model_int8.tflite"]
        worst = f"{tfl['worst_class']} {tfl['per_class'][tfl['worst_class']]:.1%}"
        line = (f"{name:<12}{shape:>10}{r['train_images']:>7}{r['test_images']:>6}{r['total_s'] / 60:>9.1f}"
                f"{m['model_float.onnx']['accuracy']:>12.2%}"
                f"{r['fit']['train_accuracy']:>9.1%}/{r['fit']['validation_accuracy']:.1%}{tfl['accuracy']:>13.2%}"
                f"{m['model_int8.onnx']['accuracy']:>11.2%}{worst:>27}"
                f"{'passed' if r['parity_passed'] else 'FAILED':>8}")
        if baselines:
            svm, logistic = r["baselines"]["classic"]["svm"], r["baselines"]["classic"]["logistic"]
            k = r["baselines"]["keras_tutorial"]
            keras_text = "failed" if k["failed"] else f"{k['accuracy']:.2%} ({k['epochs']} ep)"
            line += (f"{svm['accuracy']:>8.2%}{logistic['accuracy']:>10.2%}{keras_text:>20}"
                     f"{100 * lead(r):>+8.2f}pp")
        print(line)
        if baselines and r["baselines"]["keras_tutorial"]["failed"]:
            print(f"  {name}: the Keras tutorial failed: {r['baselines']['keras_tutorial']['failed']}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    train_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", type=Path, nargs="+")
    p.add_argument("--out", type=Path, default=Path("artifacts/own_classes"))
    p.add_argument("--no-baselines", action="store_true", help="only our own model (benchmarks/baselines.py skipped)")
    args = p.parse_args(argv)
    for folder in args.folders:
        if not (folder / "test").is_dir():
            p.error(f"{folder} has no test/ folder of held-out images")
    results = {}
    for folder in args.folders:
        results[folder.name] = one_folder(folder, args.out / folder.name, train_args, not args.no_baselines)
        write_json(args.out / "own_classes.json", {"runs": results})
    print_table(results, not args.no_baselines)
    print(f"wrote {args.out / 'own_classes.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
