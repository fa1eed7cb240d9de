"""`make try`: the bundled model on a few photos and a short camera clip, in about a minute.

Runs the commands a user would type (`python -m runtime FILES`, `python -m camera_demo --source
CLIP --headless`), prints their answers beside the truth (samples/truth.json) and the speed.
Needs only the runtime and the camera demo (`pip install '.[tflite,camera]'`): no TensorFlow.
Exit 0 when both commands ran, 1 when one failed.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LATENCY_CALLS = 1000


def run(args: list[str], shown: str) -> list[dict]:
    """`python -m ARGS` from the repository, echoed as ``shown``; its stdout's JSON lines."""
    print(f"$ python -m {shown}")
    result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`python -m {shown}` exited {result.returncode}:\n{result.stderr.strip()[-2000:]}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def photos(truth: dict[str, str]) -> int:
    files = sorted((HERE / "photos").iterdir())
    answers = run(["runtime", "--json", *map(str, files)], "runtime --json samples/photos/*")
    right = 0
    for answer, name in zip(answers, (f.name for f in files)):
        label = truth[name]
        right += answer["label"] == label
        mark = "right" if answer["label"] == label else f"wrong: it is a {label}"
        print(f"  {name:20} {answer['label']:12} {answer['confidence']:6.1%}  {mark}")
    print(f"  {right} of {len(truth)} right\n")
    return right


def clip(truth: dict) -> int:
    lines = run(["camera_demo", "--source", str(HERE / truth["file"]), "--headless"],
                f"camera_demo --source samples/{truth['file']} --headless")
    frames, summary = lines[:-1], lines[-1]
    hold, right = truth["frames_per_garment"], 0
    for k, label in enumerate(truth["labels"]):
        votes = Counter(f["label"] for f in frames[k * hold:(k + 1) * hold])
        answer, count = votes.most_common(1)[0]
        right += answer == label
        mark = "right" if answer == label else f"wrong: it is a {label}"
        frames_shown = f"(frames {k * hold + 1}-{(k + 1) * hold})"
        print(f"  garment {k + 1:2} {frames_shown:15} {answer:12} "
              f"{count} of {hold} frames  {mark}")
    print(f"  {right} of {len(truth['labels'])} garments right; {summary['frames']} frames of 640x480 at "
          f"{summary['fps']:.0f} frames/s (median {summary['median_latency_ms']:.1f} ms a frame: finding the "
          f"garment, framing it, the model)\n")
    return right


def latency() -> None:
    """Predictor.predict on one model-shaped image, one thread: the median of LATENCY_CALLS calls."""
    import numpy as np

    from runtime import Predictor

    predictor = Predictor(num_threads=1)
    image = np.random.default_rng(0).integers(0, 256, predictor.contract.image_shape, dtype=np.uint8)
    times = []
    for _ in range(LATENCY_CALLS + 50):
        t0 = time.perf_counter()
        predictor.predict(image)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times[50:]) * 1e6
    print(f"Speed: Predictor.predict on one {'x'.join(map(str, predictor.contract.image_shape))} image, "
          f"1 thread, {predictor.model_path.name}: median {median:.0f} µs over {LATENCY_CALLS} calls")


def main() -> int:
    truth = json.loads((HERE / "truth.json").read_text())
    print("The bundled model on sample photos (official test images, and desk scenes as a webcam sees them)")
    try:
        photos(truth["photos"])
        print("... and on a short camera clip (a garment held for a moment, then the next)")
        clip(truth["clip"])
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    latency()
    print("\nNext: `python -m camera_demo` on your webcam, `make serve` for the web page and HTTP API, "
          "`make demo` to train and export it yourself (about 30 minutes).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
