"""python -m simulator.make_video OUT.mp4: a 640x480 test video of camera-like garments.

Each bundled sample garment (equal per class, shuffled with --seed) is rendered once by
simulator.camera_sim and held for --hold frames. Prints the true label of every garment as
JSON, so a run of the demo over the video can be scored.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from camera_demo.sources import SAMPLES
from camera_demo.video import video_writer
from simulator import camera_sim


def make_video(path: Path, garments: int = 30, hold: int = 8, seed: int = 11,
               size: tuple[int, int] = (640, 480), fps: float = 30.0) -> np.ndarray:
    """Write the video; returns the true label of each garment, in order."""
    samples = np.load(SAMPLES)
    rng = np.random.default_rng(seed)
    classes = np.unique(samples["labels"])
    per_class = -(-garments // len(classes))
    picks = np.concatenate([np.flatnonzero(samples["labels"] == c)[:per_class] for c in classes])
    picks = rng.permutation(picks)[:garments]
    with video_writer(path, fps, size) as writer:
        for i in picks:
            frame = camera_sim.render(samples["images"][i], rng, size=size)
            for _ in range(hold):
                writer.write(frame)
    return samples["labels"][picks]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulator.make_video", description=__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("--garments", type=int, default=30)
    p.add_argument("--hold", type=int, default=8, help="frames per garment")
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args(argv)
    labels = make_video(args.out, args.garments, args.hold, args.seed)
    print(json.dumps({"video": str(args.out), "hold": args.hold, "labels": labels.tolist()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
