"""The equivalence check of `--data DIR`: Fashion-MNIST written out as a folder of PNGs
(DIR/train/<class>/, DIR/test/<class>/) and trained through `python -m train --data DIR`
lands where the native path does. Both runs use the same recipe (Fashion-MNIST's, set by
flags on the folder run), one after the other on the same machine; the table compares
their official-test accuracies (float, QAT).

    python benchmarks/fashion_folder.py --out artifacts/fashion_folder [--epochs 35]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.files import write_json  # noqa: E402


def folder_name(label: str) -> str:
    return label.replace("/", "-")  # "T-shirt/top": a slash cannot be in a folder's name


def write_pngs(root: Path) -> int:
    from train import data as fmnist

    ds = fmnist.load()
    names = [folder_name(label) for label in fmnist.CLASS_NAMES]
    for split, images, labels in (("train", ds.train_images, ds.train_labels),
                                  ("test", ds.test_images, ds.test_labels)):
        for name in names:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(image).save(root / split / names[label] / f"{i:05d}.png")
    return len(ds.train_labels) + len(ds.test_labels)


def train(args: list[str], out: Path) -> tuple[dict, float]:
    started = time.time()
    with (out.parent / f"{out.name}.log").open("w") as log:
        code = subprocess.call([sys.executable, "-m", "train", "--out", str(out), *args], cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if code != 0:
        raise SystemExit(f"python -m train {' '.join(args)} failed (exit {code}); see {out}.log")
    return json.loads((out / "train_report.json").read_text()), time.time() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("artifacts/fashion_folder"))
    p.add_argument("--epochs", type=int, default=35, help="float epochs of both runs (Fashion-MNIST's default: 35)")
    args = p.parse_args(argv)
    pngs = args.out / "pngs"
    if not (pngs / "test").is_dir():
        print(f"wrote {write_pngs(pngs)} PNGs into {pngs}")
    recipe = ["--epochs", str(args.epochs), "--qat-epochs", "2"]
    same = ["--batch-size", "128", "--learning-rate", "3e-3", "--augment", "standard", "--flip", "on",
            "--init", "scratch", "--preprocess", "resize"]  # resize: a 28x28 PNG reaches the model as it is
    # the same recipe on both paths: no camera crops natively (a folder of PNGs has none)
    runs = {"native": train([*recipe, "--camera-frames", "0"], args.out / "native"),
            "folder": train(["--data", str(pngs), *recipe, *same], args.out / "folder")}
    rows = {name: {"float": r["float"]["test_accuracy"], "qat": r["qat"]["test_accuracy"],
                   "test_images": r["data"]["test"], "minutes": round(s / 60, 1)} for name, (r, s) in runs.items()}
    rows["difference_pp"] = {k: round(100 * (rows["folder"][k] - rows["native"][k]), 2) for k in ("float", "qat")}
    write_json(args.out / "fashion_folder.json", {"epochs": args.epochs, "runs": rows})
    print(f"\n{'path':<10}{'float':>9}{'QAT':>9}{'test images':>13}{'minutes':>9}")
    for name in ("native", "folder"):
        r = rows[name]
        print(f"{name:<10}{r['float']:>9.2%}{r['qat']:>9.2%}{r['test_images']:>13}{r['minutes']:>9}")
    d = rows["difference_pp"]
    print(f"{'folder - native':<10}{d['float']:>+8.2f}pp{d['qat']:>+7.2f}pp")
    worst = max(abs(d["float"]), abs(d["qat"]))
    print(f"{'within' if worst <= 0.5 else 'NOT within'} 0.5 pp; wrote {args.out / 'fashion_folder.json'}")
    return 0 if np.isfinite(worst) else 1


if __name__ == "__main__":
    sys.exit(main())
