"""python -m experiments.compare: every architecture trained alike, QAT, int8, measured alike.

Each architecture gets the same data, validation split, seed, recipe and epoch budget
(``python -m train``'s pipeline), then QAT fine-tuning and a full-integer int8 TFLite
export. Each int8 model is then measured the same way: official test accuracy, file
size, batch-1 latency of ``Predictor.predict`` with one thread (in a fresh process per
model, as ``runtime.bench`` does), and camera-domain accuracy (``train.camera_eval``'s
rendered frames). The bundled model, trained with the full budget, is an extra row.

Writes ``compare.json``, ``compare.md`` (a Markdown table) and ``compare.png`` (test
accuracy against latency, bubble area = int8 file size, the Pareto front drawn). A killed
run, started again with the same command, reuses every finished training stage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_ARCHS = ("edge", "residual", "residual:width=0.5", "design_baseline", "notebook_cnn", "lenet", "mlp", "linear")
SHIPPED = "shipped (35 epochs)"
CAMERA_SEED = 2026  # train.camera_eval's default: the same frames for every model
CAMERA_SETS = ("standard", "hard", "desk")  # the comparison's sets (camera_eval has more kinds of desk)


@dataclass
class Budget:
    epochs: int = 8
    qat_epochs: int = 2
    limit: int | None = None  # training images (stratified subset); None: all 55,000
    calibration: int = 1000  # int8 calibration images, from the training set
    camera_frames: int = 1000  # per camera variant, from the test set
    repeats: int = 2000  # latency calls per measurement
    seed: int = 42


QUICK = Budget(epochs=1, qat_epochs=1, limit=2000, calibration=200, camera_frames=50, repeats=300)
QUICK_ARCHS = ("edge", "linear")


def train_one(arch: str, budget: Budget, dataset, out: Path) -> dict:
    """Train float + QAT with ``python -m train``'s pipeline; returns its report."""
    from train.augment import PRESETS
    from train.keras_env import keras
    from train.pipeline import run
    from train.trainer import TrainConfig

    keras.backend.clear_session()  # each model starts from a clean graph and the same seed
    config = TrainConfig(arch=arch, epochs=budget.epochs, qat_epochs=budget.qat_epochs,
                         limit=budget.limit, seed=budget.seed, augment=PRESETS["standard"])
    return run(config, dataset, out)


def export_int8(run_dir: Path, dataset, calibration_size: int) -> Path:
    """The run's QAT model -> full-integer int8 TFLite, as ``python -m export`` does it."""
    from export.calibration import calibration_images
    from export.formats import FORMATS, Job
    from export.metadata import build_metadata, model_version, training_summary
    from train.trainer import QAT_MODEL, load_qat_model

    qat_path, contract = run_dir / QAT_MODEL, dataset.contract
    training = training_summary(run_dir / "train_report.json")
    version = model_version(qat_path)
    job = Job(load_qat_model(qat_path), training["architecture"], contract,
              calibration_images(dataset.train_images, dataset.train_labels, calibration_size, contract),
              lambda fmt: build_metadata(fmt, version, training, contract), run_dir)
    tflite = FORMATS["tflite-int8"]
    return tflite.convert(job, run_dir / tflite.file("fashion"))


def int8_accuracy(model: Path, dataset) -> float:
    """Official test accuracy of an exported model, through the runtime."""
    from runtime import Predictor

    backend = Predictor(model, num_threads=1).backend
    probabilities = backend.run_pixels(dataset.test_images[..., None])
    return float((probabilities.argmax(1) == dataset.test_labels).mean())


def camera_accuracy(models: dict[str, Path], dataset, frames: int) -> dict[str, dict[str, float]]:
    """{model: {variant: accuracy}} on ``frames`` rendered frames per variant.

    The frames are ``train.camera_eval``'s (same sampling, seed and renderer); each is
    rendered once and shown to every model, since rendering (~50 ms a frame here) costs
    far more than inference and 3,000 frames do not fit in memory at once.
    """
    from runtime import Predictor
    from simulator import camera_sim
    from train.camera_eval import VARIANTS, sample

    predictors = {name: Predictor(path, num_threads=1) for name, path in models.items()}
    images, labels = sample(dataset, "test", frames, CAMERA_SEED)
    results: dict[str, dict[str, float]] = {name: {} for name in models}
    for variant in CAMERA_SETS:
        scene, started = VARIANTS[variant], time.time()
        rng = np.random.default_rng(CAMERA_SEED)
        correct = dict.fromkeys(models, 0)
        for image, label in zip(images, labels):
            frame = camera_sim.render(image, rng, scene)
            for name, predictor in predictors.items():
                correct[name] += int(predictor.predict(frame).index == label)
        for name in models:
            results[name][variant] = correct[name] / len(images)
        log.info("camera %s: %d frames in %.0f s", variant, len(images), time.time() - started)
    return results


def measure_latency(models: dict[str, Path], dataset, work: Path, repeats: int, rounds: int = 2) -> dict[str, dict]:
    """``runtime.bench``'s measurements of each model, each in a fresh process.

    Models take turns for ``rounds`` rounds and each keeps its fastest round: on a shared
    machine a neighbour's burst then slows one measurement, not one model.
    """
    from runtime.bench import run_json
    from simulator.camera_sim import render

    images = dataset.test_images[:64]
    inputs = work / "latency_inputs.npz"
    np.savez(inputs, images=images, frame=render(images[0], np.random.default_rng(0)))
    best: dict[str, dict] = {}
    for _ in range(rounds):
        for name, path in models.items():
            result = run_json(["--one", str(path), str(inputs), "--repeats", str(repeats)])
            if name not in best or (result["predict_1thread"]["median_us"]
                                    < best[name]["predict_1thread"]["median_us"]):
                best[name] = result
    inputs.unlink()
    return best


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (accuracy, latency) points: True where no other point is at least as accurate
    and at least as fast, and strictly better in one of the two."""
    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])

    return [not any(dominates(other, point) for other in points) for point in points]


def row_from_report(name: str, report: dict, model: Path) -> dict:
    """A table row's training facts, from a ``train_report.json``."""
    return {
        "name": name, "architecture": report["architecture"], "model": str(model),
        "epochs": report["float"]["epochs_run"], "qat_epochs": report["qat"]["epochs_run"],
        "parameters": report["parameters"], "macs": report["macs"],
        "float_test_accuracy": report["float"]["test_accuracy"],
        "qat_test_accuracy": report["qat"]["test_accuracy"],
        "train_time_s": round(report["float"]["wall_time_s"] + report["qat"]["wall_time_s"], 1),
    }


def evaluate_rows(rows: list[dict], dataset, budget: Budget) -> None:
    """Add each int8 model's test accuracy, size and camera-domain accuracy to its row."""
    camera = camera_accuracy({row["name"]: Path(row["model"]) for row in rows}, dataset,
                             budget.camera_frames)
    for row in rows:
        model = Path(row["model"])
        row["int8_test_accuracy"] = int8_accuracy(model, dataset)
        row["int8_size_kb"] = round(model.stat().st_size / 1024, 1)
        row["camera_accuracy"] = camera[row["name"]]
        log.info("%s: int8 test accuracy %.4f, camera %s", row["name"], row["int8_test_accuracy"],
                 row["camera_accuracy"])


def add_latency_and_front(rows: list[dict], dataset, work: Path, repeats: int) -> None:
    latency = measure_latency({row["name"]: Path(row["model"]) for row in rows}, dataset, work, repeats)
    for row in rows:
        bench = latency[row["name"]]
        row["latency_us"] = bench["predict_1thread"]["median_us"]
        row["latency_p95_us"] = bench["predict_1thread"]["p95_us"]
        row["frame_640x480_us"] = bench["frame_640x480"]["median_us"]
    front = pareto_front([(row["int8_test_accuracy"], row["latency_us"]) for row in rows])
    for row, on_front in zip(rows, front):
        row["pareto"] = on_front


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | epochs (+QAT) | parameters | MACs | float test | int8 test | int8 size | "
             "latency, median (p95) | camera standard / hard / desk | training time | Pareto |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |"]
    for r in rows:
        camera = " / ".join(f"{r['camera_accuracy'][v]:.1%}" for v in ("standard", "hard", "desk"))
        lines.append(
            f"| {r['name']} | {r['epochs']} (+{r['qat_epochs']}) | {r['parameters']:,} | "
            f"{r['macs'] / 1e6:.2f}M | {r['float_test_accuracy']:.2%} | **{r['int8_test_accuracy']:.2%}** | "
            f"{r['int8_size_kb']:,.0f} KB | {r['latency_us']:.0f} µs ({r['latency_p95_us']:.0f}) | "
            f"{camera} | {r['train_time_s'] / 60:.1f} min | {'yes' if r['pareto'] else ''} |")
    return "\n".join(lines)


def plot_pareto(rows: list[dict], path: Path, title: str) -> None:
    """Int8 test accuracy against batch-1 latency; bubble area = int8 file size."""
    from train.report import _figure, save_figure

    plt = _figure()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for r in rows:
        colour = "tab:red" if r["name"] == SHIPPED else ("tab:blue" if r["pareto"] else "tab:gray")
        area = 20 + 3 * r["int8_size_kb"]  # points^2
        ax.scatter(r["latency_us"], 100 * r["int8_test_accuracy"], s=area,
                   color=colour, alpha=0.55, edgecolors="black", linewidths=0.6)
        ax.annotate(f"{r['name']}\n{r['int8_size_kb']:.0f} KB", (r["latency_us"], 100 * r["int8_test_accuracy"]),
                    textcoords="offset points", xytext=(area ** 0.5 / 2 + 3, -6), fontsize=8)
    front = sorted((r["latency_us"], 100 * r["int8_test_accuracy"]) for r in rows if r["pareto"])
    if front:
        ax.step(*zip(*front), where="post", color="tab:blue", linestyle="--", linewidth=1,
                label="Pareto front: no other model is as accurate and as fast")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("batch-1 latency, Predictor.predict, 1 thread, median (µs, log scale)")
    ax.set_ylabel("int8 TFLite accuracy on the official test set (%)")
    ax.set_title(title + "\nbubble area = int8 TFLite size", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = Budget()
    p = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=None,
                   help=f"architectures (default: {' '.join(DEFAULT_ARCHS)})")
    p.add_argument("--epochs", type=int, default=None, help=f"float epochs each (default {d.epochs})")
    p.add_argument("--qat-epochs", type=int, default=None, help=f"default {d.qat_epochs}")
    p.add_argument("--limit", type=int, default=None, help="training images (stratified subset)")
    p.add_argument("--camera-frames", type=int, default=None,
                   help=f"camera frames per variant (default {d.camera_frames})")
    p.add_argument("--repeats", type=int, default=None, help=f"latency calls (default {d.repeats})")
    p.add_argument("--no-shipped", action="store_true", help="leave out the bundled model's row")
    p.add_argument("--quick", action="store_true",
                   help=f"for tests: {' and '.join(QUICK_ARCHS)}, {QUICK.limit} images, 1 epoch + 1 QAT")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("artifacts/compare"))
    return p.parse_args(argv)


def budget_from(args: argparse.Namespace) -> Budget:
    base = QUICK if args.quick else Budget()
    overrides = {"epochs": args.epochs, "qat_epochs": args.qat_epochs, "limit": args.limit,
                 "camera_frames": args.camera_frames, "repeats": args.repeats}
    return Budget(**{**asdict(base), **{k: v for k, v in overrides.items() if v is not None},
                     "seed": args.seed})


def train_rows(archs: list[str], budget: Budget, dataset, out: Path, shipped: bool) -> list[dict]:
    """Train and export each architecture; the bundled model is appended as is."""
    rows = []
    for arch in archs:
        print(f"\n== {arch}: {budget.epochs} epochs + {budget.qat_epochs} QAT ==", flush=True)
        run_dir = out / arch.replace(":", "_")
        report = train_one(arch, budget, dataset, run_dir)
        rows.append(row_from_report(arch, report, export_int8(run_dir, dataset, budget.calibration)))
    if shipped:
        from runtime.predictor import BUNDLED

        report = json.loads((BUNDLED["int8.tflite"].parent / "train_report.json").read_text())
        rows.append(row_from_report(SHIPPED, report, BUNDLED["int8.tflite"]))
    return rows


def write_outputs(rows: list[dict], budget: Budget, out: Path, wall_s: float) -> str:
    """compare.json, compare.md and compare.png; returns the Markdown table."""
    from runtime.files import write_json, write_text

    subset = f"{budget.limit:,} training images" if budget.limit else "all 55,000 training images"
    title = (f"Fashion-MNIST, {subset}, {budget.epochs} epoch(s) + {budget.qat_epochs} QAT each "
             f"(shipped: its own full run)")
    write_json(out / "compare.json", {
        "date": time.strftime("%Y-%m-%d"), "budget": asdict(budget), "camera_seed": CAMERA_SEED,
        "pareto_axes": ["int8_test_accuracy (max)", "latency_us (min)"],
        "wall_time_s": round(wall_s, 1), "rows": rows})
    table = markdown_table(rows)
    write_text(out / "compare.md", f"{title}\n\n{table}\n")
    plot_pareto(rows, out / "compare.png", title)
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from train import data as fmnist
    from train.model import parse_spec

    budget = budget_from(args)
    archs = args.archs or list(QUICK_ARCHS if args.quick else DEFAULT_ARCHS)
    try:
        for arch in archs:
            parse_spec(arch)
        dataset = fmnist.load(args.data_dir)
    except (ValueError, fmnist.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = train_rows(archs, budget, dataset, args.out, shipped=not args.no_shipped)
    print(f"\nevaluating the int8 models (test set, {budget.camera_frames} camera frames per variant) ...",
          flush=True)
    evaluate_rows(rows, dataset, budget)
    print("\nmeasuring latency, one process per model ...", flush=True)
    add_latency_and_front(rows, dataset, args.out, budget.repeats)
    wall = time.time() - started
    table = write_outputs(rows, budget, args.out, wall)
    print(f"\n{table}\n\nwrote {args.out}/compare.json, compare.md, compare.png in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
