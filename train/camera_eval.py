"""python -m train.camera_eval: accuracy on camera-like frames rendered from Fashion-MNIST.

Each image is rendered into a 640x480 colour frame (simulator.camera_sim: light tinted
backdrop, lighting gradient, 40-80% of the frame height, off centre, rotated up to 15°,
blur, noise; the hard variant is smaller, blurrier and noisier) with a fixed seed, then
classified through ``Predictor.predict(frame)``. The naive baseline resizes the whole
frame to 28x28 in grayscale, as a notebook would. Frames from the *test* set are for
reporting; tune on ``--split train`` only.

Sets (``--sets``, default all): standard, hard, desk (blotchy texture, vignetting, a shadow,
a dark edge in half the frames, JPEG q70) render the same frames as they always did; wood,
fabric, keyboard, lamps (two shadows), phone (colour cast, gamma, motion blur, JPEG 50-90) add
one kind of clutter each to a moderate desk; cluttered draws all of them per frame, with
perspective; angled is the desk seen by a camera not square-on (perspective: its edge a
slanted band), warped the same with black corners (a picture warped by software), sleeve the
same with a sleeve or arm reaching in from a side in every frame (no table edge), everyday
the angled desk with an edge in half the frames and a sleeve in one in five, gamma and JPEG
55-85 drawn per frame. See simulator.camera_sim.SCENES.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

from runtime import Contract, Predictor
from runtime.files import write_json
from runtime.preprocess import prepare, resize, to_gray
from train import data as fmnist
from train.report import confusion_matrix, plot_confusion

try:
    from simulator import camera_sim
except ImportError:  # installed from the wheel: the simulator stays in the source tree
    print("error: python -m train.camera_eval renders its frames with the desk simulator (simulator/), which "
          "comes with the source tree, not the wheel: run it from a clone of the repository", file=sys.stderr)
    raise SystemExit(2) from None

VARIANTS = camera_sim.SCENES
CONFIDENT = 0.5  # an answer the demo and the page show as a label (below: "not sure")


def equal_per_class(images: np.ndarray, labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` of ``images`` and their labels, equal per class, seeded."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    idx = np.concatenate([rng.choice(np.flatnonzero(labels == c), n // len(classes), replace=False)
                          for c in classes])
    return images[idx], labels[idx]


def sample(dataset: fmnist.FashionMNIST, split: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of ``split``, equal per class, seeded."""
    images, labels = ((dataset.test_images, dataset.test_labels) if split == "test"
                      else (dataset.train_images, dataset.train_labels))
    return equal_per_class(images, labels, n, seed)


def naive(frame: np.ndarray, contract: Contract) -> np.ndarray:
    """The notebook way: grayscale, squash the whole frame to the input size, no object finding."""
    return resize(to_gray(frame), contract.width, contract.height)


def baseline_preprocessing(ref: str):
    """``runtime.preprocess`` as it was at git ``ref``, as a module (for ``--compare``): the one file
    runtime/preprocess.py it was, or the package runtime/preprocess/ it is (its modules import one
    another relatively, so it loads under another name)."""
    root = Path(__file__).parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=root).stdout

    try:
        paths = git("ls-tree", "--name-only", ref, "runtime/preprocess.py", "runtime/preprocess/").split()
        sources = {path: git("show", f"{ref}:{path}") for path in paths if path.endswith(".py")}
    except (OSError, subprocess.CalledProcessError) as e:
        detail = (getattr(e, "stderr", "") or str(e)).strip()
        raise ValueError(f"cannot read runtime.preprocess at {ref!r}: {detail}") from None
    name = "preprocess_at_" + re.sub(r"\W", "_", ref)
    if "runtime/preprocess.py" in sources:
        module = types.ModuleType(name)
        sys.modules[name] = module  # dataclasses look their module up there
        exec(compile(sources["runtime/preprocess.py"], f"{ref}:runtime/preprocess.py", "exec"), module.__dict__)
        return module
    if "runtime/preprocess/__init__.py" not in sources:
        raise ValueError(f"no runtime/preprocess.py nor runtime/preprocess/ at {ref!r}")
    with tempfile.TemporaryDirectory() as folder:
        for path, source in sources.items():
            (Path(folder) / Path(path).name).write_text(source)
        spec = importlib.util.spec_from_file_location(name, Path(folder) / "__init__.py",
                                                      submodule_search_locations=[folder])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)  # imports every module of the package
    return module


def classify_with(predictor: Predictor, prepare, frame: np.ndarray) -> tuple[int, bool, float]:
    """Class index, object found, and preprocessing time (s) of ``frame`` through ``prepare``."""
    started = time.perf_counter()
    prepared = prepare(frame, predictor.contract)
    took = time.perf_counter() - started
    probabilities = predictor.backend.run(predictor.contract.from_unit(prepared.image[None]))[0]
    return int(np.argmax(probabilities)), bool(prepared.found), took


def evaluate(predictor: Predictor, images: np.ndarray, labels: np.ndarray, scene: camera_sim.Scene,
             seed: int, baseline=None) -> dict:
    """Accuracy through ``Predictor.predict(frame)`` on frames of ``images`` rendered as ``scene``;
    with ``baseline`` (a preprocessing module), its accuracy and both preprocessing times, per frame
    side by side."""
    rng = np.random.default_rng(seed)
    ours, naive_guess, found, confident, took = [], [], 0, [], {"ours": [], "baseline": []}
    theirs, their_found = [], 0
    for image in images:
        frame = camera_sim.render(image, rng, scene)
        prediction = predictor.predict(frame)
        ours.append(prediction.index)
        found += prediction.object_found
        confident.append(prediction.object_found and prediction.confidence >= CONFIDENT)
        naive_guess.append(predictor.predict(naive(frame, predictor.contract)).index)
        if baseline is not None:
            index, was_found, seconds = classify_with(predictor, baseline.prepare, frame)
            theirs.append(index)
            their_found += was_found
            took["baseline"].append(seconds)
            took["ours"].append(classify_with(predictor, prepare, frame)[2])
    ours, naive_guess, confident = np.array(ours), np.array(naive_guess), np.array(confident)
    result = {"accuracy": float((ours == labels).mean()),
              "naive_resize_accuracy": float((naive_guess == labels).mean()),
              "object_found": found / len(images),
              "confident": float(confident.mean()),
              "confident_accuracy": float((ours == labels)[confident].mean()) if confident.any() else None,
              "confusion_matrix": confusion_matrix(labels, ours, len(predictor.labels)).tolist()}
    if baseline is not None:
        result["baseline"] = {"accuracy": float((np.array(theirs) == labels).mean()),
                              "object_found": their_found / len(images),
                              "preprocess_median_us": round(float(np.median(took["baseline"])) * 1e6, 1)}
        result["preprocess_median_us"] = round(float(np.median(took["ours"])) * 1e6, 1)
    return result


def summary_line(name: str, result: dict, seconds: float) -> str:
    """One set's row: accuracy, the naive baseline, how often an object was found and answered
    confidently; with --compare, the old preprocessing's accuracy and both times."""
    confident = result["confident_accuracy"]
    line = (f"{name:<10} accuracy {result['accuracy']:7.2%}  naive {result['naive_resize_accuracy']:6.2%}  "
            f"found {result['object_found']:6.1%}  confident {result['confident']:6.1%} "
            f"({'-' if confident is None else f'{confident:.1%}'} right)")
    if "baseline" in result:
        old = result["baseline"]
        line += (f"  | {old['accuracy']:7.2%} found {old['object_found']:6.1%}  preprocess "
                 f"{old['preprocess_median_us']:.0f} -> {result['preprocess_median_us']:.0f} us "
                 f"({result['preprocess_median_us'] / old['preprocess_median_us']:.2f}x)")
    return line + f"  ({seconds:.0f} s)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.camera_eval", description=__doc__)
    p.add_argument("--model", type=Path, default=None, help="a model file, or a bundled model by name (default: edge)")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--n", type=int, default=2000, help="frames per variant (equal per class)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("artifacts"))
    p.add_argument("--sets", default=",".join(VARIANTS),
                   help=f"comma-separated sets to render (default all: {','.join(VARIANTS)})")
    p.add_argument("--compare", metavar="GIT_REF", default=None,
                   help="also run runtime.preprocess as it was at this git commit on the same frames: "
                        "accuracy and preprocessing time side by side")
    args = p.parse_args(argv)
    sets = [name.strip() for name in args.sets.split(",") if name.strip()]
    unknown = [name for name in sets if name not in VARIANTS]
    if unknown or not sets:
        p.error(f"unknown set(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(VARIANTS)}")
    try:
        dataset = fmnist.load(args.data_dir)
        baseline = baseline_preprocessing(args.compare) if args.compare else None
    except (fmnist.DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    predictor = Predictor(args.model, num_threads=1)
    images, labels = sample(dataset, args.split, args.n, args.seed)
    original = float(np.mean([p.index for p in predictor.predict_batch(images)] == labels))
    results = {"model": str(predictor.model_path), "split": args.split, "frames": len(images),
               "seed": args.seed, "original_28x28_accuracy": original, "compare": args.compare}
    args.out.mkdir(parents=True, exist_ok=True)
    for name in sets:
        scene = VARIANTS[name]
        started = time.time()
        results[name] = evaluate(predictor, images, labels, scene, args.seed, baseline)
        plot_confusion(np.array(results[name]["confusion_matrix"]), predictor.labels,
                       args.out / f"camera_confusion_{args.split}_{name}.png",
                       f"camera-domain ({name}, {args.split}) accuracy {results[name]['accuracy']:.2%}")
        print(summary_line(name, results[name], time.time() - started))
    print(f"same images as 28x28 arrays: {original:.2%}")
    suffix = "" if sets == list(VARIANTS) else "_" + "_".join(sets)
    out = args.out / f"camera_eval_{args.split}{suffix}.json"
    write_json(out, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
