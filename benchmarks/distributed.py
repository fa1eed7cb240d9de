"""More than one worker on this machine: is it worth it? Side by side in one run.

1. The same recipe trained by 1 process (TensorFlow's default threads, then one thread per
   pool) and by 2 workers of ``--strategy multi-worker`` on 127.0.0.1 (one thread per pool
   each: the same cores),
   each exported with ``python -m export`` through the parity gate: epoch time, wall time,
   test accuracy of the QAT and the int8 TFLite model (the tfmot/TFLite traps: quantized
   layers under a strategy, the converter on a model trained under one).
2. The same 4-trial search, local (one trial after another) and on Ray Tune (trials side
   by side, one CPU and one thread each, ASHA).

    python benchmarks/distributed.py [--limit 10000 --epochs 3] [--out artifacts/distributed.json]

Prints a table and writes the JSON. The machine may be shared: compare the rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from runtime.files import write_json  # noqa: E402
from train.distributed import local_tf_configs  # noqa: E402

ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def env(**extra: str) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def epoch_seconds(log: str) -> list[int]:
    return [int(s) for s in re.findall(r"float epoch \d+/\d+ .* (\d+)s$", log, re.M)]


def train(workers: int, args: list[str], out: Path, threads: dict) -> dict:
    """``python -m train`` with 1 process or ``workers`` workers; the chief's log and wall time."""
    started = time.time()
    if workers == 1:
        done = subprocess.run([sys.executable, "-m", "train", *args, "--out", str(out)], capture_output=True,
                              text=True, env=env(**threads), cwd=ROOT)
        codes, log = [done.returncode], done.stdout + done.stderr
    else:
        processes = [subprocess.Popen([sys.executable, "-m", "train", "--strategy", "multi-worker", *args,
                                       "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=env(TF_CONFIG=config, **threads), cwd=ROOT)
                     for config in local_tf_configs(workers)]
        logs = [p.communicate()[0] for p in processes]
        codes, log = [p.returncode for p in processes], logs[0]
    wall = time.time() - started
    if codes != [0] * workers:
        raise SystemExit(f"training with {workers} worker(s) failed {codes}:\n{log[-3000:]}")
    return {"log": log, "wall_s": round(wall, 1)}


def export(out: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "export", "--format", "all", "--model", str(out / "qat_model.h5")],
                          capture_output=True, text=True, env=env(), cwd=ROOT)
    parity = json.loads((out / "parity.json").read_text())
    return {"exit": done.returncode, "passed": parity["passed"], "formats": parity["formats"]}


def training_rows(args: argparse.Namespace, work: Path) -> list[dict]:
    recipe = ["--limit", str(args.limit), "--epochs", str(args.epochs), "--qat-epochs", "1",
              "--camera-frames", "0"]  # the training itself is compared, not the rendering before it
    rows = []
    for workers, threads, name in ((1, {}, "default (2)"), (1, ONE_THREAD, "1"), (2, ONE_THREAD, "1 each")):
        out = work / f"workers{workers}-threads{name.split()[0]}"
        run = train(workers, recipe, out, threads)
        report = json.loads((out / "train_report.json").read_text())
        exported = export(out)
        seconds = epoch_seconds(run["log"])
        rows.append({"workers": workers, "threads": name,
                     "first_epoch_s": seconds[0], "later_epoch_s": min(seconds[1:] or seconds),
                     "float_stage_s": report["float"]["wall_time_s"], "wall_s": run["wall_s"],
                     "float_accuracy": report["float"]["test_accuracy"], "qat_accuracy": report["qat"]["test_accuracy"],
                     "tflite_int8_accuracy": exported["formats"]["tflite-int8"]["accuracy"],
                     "tflite_int8_agreement": exported["formats"]["tflite-int8"]["top1_agreement"],
                     "onnx_int8_accuracy": exported["formats"]["onnx-int8"]["accuracy"],
                     "parity_passed": exported["passed"], "export_exit": exported["exit"]})
        print(f"trained with {workers} worker(s): {rows[-1]}", flush=True)
    return rows


def search_rows(args: argparse.Namespace, work: Path) -> list[dict]:
    rows = []
    for backend in ("local", "ray"):
        out = work / f"search-{backend}.json"
        started = time.time()
        done = subprocess.run([sys.executable, "-m", "train.search", "--backend", backend, "--trials", "4",
                               "--epochs", str(args.search_epochs), "--limit", str(args.search_limit),
                               "--out", str(out)], capture_output=True, text=True, env=env(), cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"the {backend} search failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
        result = json.loads(out.read_text())
        rows.append({"backend": backend, "wall_s": round(time.time() - started, 1),
                     "trials": len(result["trials"]), "best_trial": result["best"]["trial"],
                     "best_val_accuracy": result["best"]["val_accuracy"],
                     "stopped_early": sum(bool(t.get("stopped_early")) for t in result["trials"]),
                     "epochs_trained": sum(t.get("epochs_run", args.search_epochs) for t in result["trials"])})
        print(f"search {backend}: {rows[-1]}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=10000, help="training images of the 1-vs-2-worker runs")
    p.add_argument("--epochs", type=int, default=3, help="float epochs of those runs (then 1 QAT epoch)")
    p.add_argument("--search-limit", type=int, default=5000)
    p.add_argument("--search-epochs", type=int, default=2)
    p.add_argument("--skip-search", action="store_true")
    p.add_argument("--out", type=Path, default=Path("artifacts/distributed.json"))
    args = p.parse_args(argv)
    work = args.out.parent / "distributed"
    load = os.getloadavg()[0]
    training = training_rows(args, work)
    search = [] if args.skip_search else search_rows(args, work)

    print(f"\nTraining, --limit {args.limit}, {args.epochs} float + 1 QAT epochs (load average at start {load:.1f}):")
    print(f"{'workers':<9}{'threads':<13}{'1st epoch':>10}{'later':>7}{'wall':>7}{'float':>8}{'QAT':>8}{'int8 tfl':>9}"
          f"{'int8 onnx':>10}{'parity':>8}")
    for r in training:
        print(f"{r['workers']:<9}{r['threads']:<13}{r['first_epoch_s']:>9}s{r['later_epoch_s']:>6}s{r['wall_s']:>6.0f}s"
              f"{r['float_accuracy']:>8.2%}{r['qat_accuracy']:>8.2%}{r['tflite_int8_accuracy']:>9.2%}"
              f"{r['onnx_int8_accuracy']:>10.2%}{'pass' if r['parity_passed'] else 'FAIL':>8}")
    speedup = training[0]["later_epoch_s"] / max(training[-1]["later_epoch_s"], 1)
    print(f"2 workers vs 1 process (default threads), a later epoch: {speedup:.2f}x the speed")
    if search:
        print(f"\nSearch, 4 trials x {args.search_epochs} epochs on {args.search_limit} images:")
        print(f"{'backend':<8}{'wall':>7}{'best val':>10}{'best trial':>12}{'stopped early':>15}{'epochs':>8}")
        for r in search:
            print(f"{r['backend']:<8}{r['wall_s']:>6.0f}s{r['best_val_accuracy']:>10.2%}{r['best_trial']:>12}"
                  f"{r['stopped_early']:>15}{r['epochs_trained']:>8}")
    write_json(args.out, {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "load_average": load,
                          "training": {"limit": args.limit, "epochs": args.epochs, "qat_epochs": 1, "rows": training,
                                       "later_epoch_speedup": round(speedup, 2)},
                          "search": {"trials": 4, "epochs": args.search_epochs, "limit": args.search_limit,
                                     "rows": search}})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
