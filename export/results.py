"""python -m export.results DIR: one table from train_report.json, parity.json and bench.json, and the
camera sets of camera_eval_test.json when there is one: a model's card.

Prints it and writes DIR/results.md; every figure comes from those files, which name the
command that made them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from export.formats import exported
from runtime.files import write_text


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def summary(out: Path) -> str:
    train, parity, bench = (load(out / name) for name in ("train_report.json", "parity.json", "bench.json"))
    latency = {m["model"]: m for m in bench.get("models", [])}
    files = exported(out, parity.get("model"))  # the model the gate judged (parity.json names it)
    lines = ["| model | test accuracy | top-1 agreement with QAT | size KB | batch-1 latency, 1 thread (median) |",
             "| --- | --- | --- | --- | --- |"]
    if train:
        lines.append(f"| Keras float (`python -m train`) | {train['float']['test_accuracy']:.2%} | | | |")
    for name, r in parity.get("formats", {}).items():
        bench_row = latency.get(files[name].name, {}) if name in files else {}
        us = bench_row.get("predict_1thread", {}).get("median_us")
        every = parity["formats"].get("keras-qat", r).get("agreement_images")  # older gates judged every image
        judged = r.get("agreement_images", every)
        shown = name if judged == every else f"{name} ({judged:,} of the images)"
        lines.append(f"| {shown} | {r['accuracy']:.2%} | {r['top1_agreement']:.2%} | {r['size_kb']} | "
                     f"{f'{us:.0f} µs' if us else ''} |")
    notes = []
    if train:
        notes.append(f"training: {train['float']['epochs_run']} float + {train['qat']['epochs_run']} QAT "
                     f"epochs in {train['wall_time_s'] / 60:.1f} min, {train['parameters']:,} parameters, "
                     f"{train['macs'] / 1e6:.1f}M multiply-adds, on {train['machine']['platform']}")
    micro = load(files["tflm"].with_suffix(".json")).get("tflm") if "tflm" in files else None
    if micro:  # as Edge Impulse shows a model for a board
        notes.append(f"microcontroller (TensorFlow Lite for Microcontrollers, `{files['tflm'].name}`): flash "
                     f"{micro['model_bytes'] / 1024:.1f} KB for the model, RAM {micro['arena_bytes'] / 1024:.1f} KB "
                     f"tensor arena (measured by tflite-micro), ops {', '.join(micro['ops'])}")
    if train and isinstance(train["qat"].get("per_class"), dict):
        recall = ", ".join(f"{label} {c['recall']:.1%}" for label, c in train["qat"]["per_class"].items())
        notes.append(f"recall by class (Keras QAT, the test set): {recall}")
    camera = next((load(path) for path in sorted(out.glob("camera_eval_test*.json"))), {})
    sets = {name: r["accuracy"] for name, r in camera.items() if isinstance(r, dict) and "accuracy" in r}
    if sets:
        notes.append(f"camera frames of test images (`python -m train.camera_eval`, {camera['frames']:,} a set): "
                     + ", ".join(f"{name} {accuracy:.2%}" for name, accuracy in sets.items()))
    if parity:
        notes.append(f"parity gate: {'passed' if parity['passed'] else 'FAILED: ' + '; '.join(parity['failures'])}")
    if bench.get("keras"):
        k = bench["keras"]
        notes.append(f"Predictor.predict ({k['predictor_model']}) vs the float Keras model per image: "
                     f"{k['speedup_vs_predict']}x faster than model.predict, {k['speedup_vs_call']}x than model(x)")
    if bench:
        notes.append(f"latency: python -m runtime.bench, {bench['machine']['cpus']} CPUs, {bench['date']}")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.results", description=__doc__)
    p.add_argument("out", type=Path, nargs="?", default=Path("artifacts"), help="default: artifacts")
    out = p.parse_args(argv).out
    if not (out / "parity.json").is_file() and not (out / "train_report.json").is_file():
        print(f"error: no train_report.json or parity.json in {out}: run `make demo`", file=sys.stderr)
        return 2
    try:
        text = summary(out)
    except ValueError as e:  # the files of several models: exported() says which
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_text(out / "results.md", text + "\n")
    print(f"\nResults ({out}/results.md):\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
