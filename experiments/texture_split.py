"""python -m experiments.texture_split: what a textured desk costs, and where: the box or the crop?

Renders validation images (which no training run sees) into frames of a scene twice with the
same random draws: as the scene is, and with its surface texture at zero amplitude (every
other draw, the garment's place, the shadow, the edge, is the same). Each frame is framed by
``runtime.preprocess`` and classified by a model (default: the bundled one). Four accuracies:

- textured: the runtime on the textured frame;
- plain: the runtime on the texture-free frame;
- textured, plain box: the textured frame cut out with the box found on the texture-free one
  (what a perfect box would give: the rest of the loss is texture inside the crop);
- plain, textured box: the texture-free frame cut out with the textured frame's box (what the
  wrong boxes alone cost).

Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

COLUMNS = ("textured", "plain", "textured, plain box", "plain, textured box")


def without_texture(scene):
    """``scene`` with its surface texture at (almost) zero amplitude: not 0, so that the texture's
    random draws are still made and a frame rendered with the same generator shares all others."""
    return dataclasses.replace(scene, texture=1e-9)


def split_frame(textured: np.ndarray, plain: np.ndarray, contract) -> dict[str, np.ndarray] | None:
    """The four crops of COLUMNS (one-channel model inputs in [0, 1]); None when either frame
    has no object."""
    from runtime import preprocess

    gray_textured, gray_plain = preprocess.to_gray(textured), preprocess.to_gray(plain)
    on_textured, on_plain = preprocess.locate(gray_textured), preprocess.locate(gray_plain)
    if on_textured is None or on_plain is None:
        return None

    def crop(gray, found, box):
        return preprocess.object_signal(gray, dataclasses.replace(found, box=box), contract.height, contract.width)

    return {"textured": crop(gray_textured, on_textured, on_textured.box),
            "plain": crop(gray_plain, on_plain, on_plain.box),
            "textured, plain box": crop(gray_textured, on_textured, on_plain.box),
            "plain, textured box": crop(gray_plain, on_plain, on_textured.box)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.texture_split", description=__doc__)
    p.add_argument("--model", type=Path, default=None, help="default: the bundled int8 model")
    p.add_argument("--scenes", default="desk,cluttered", help="runtime.camera_sim scenes with texture")
    p.add_argument("--frames", type=int, default=600, help="validation images (equal per class)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--out", type=Path, default=Path("artifacts/texture_split"))
    args = p.parse_args(argv)
    from experiments.camera_mix import validation_images
    from runtime import Predictor, camera_sim
    from runtime.files import write_json
    from train import data as fmnist
    from train.trainer import TrainConfig

    scenes = args.scenes.split(",")
    unknown = [name for name in scenes if name not in camera_sim.SCENES]
    if unknown or any(not camera_sim.SCENES[name].texture for name in scenes):
        p.error(f"--scenes: textured scenes of {', '.join(n for n, s in camera_sim.SCENES.items() if s.texture)}")
    predictor = Predictor(args.model)
    contract = predictor.contract
    images, labels = validation_images(fmnist.load(), TrainConfig(), args.frames, args.seed)
    rows = []
    for name in scenes:
        scene = camera_sim.SCENES[name]
        right = dict.fromkeys(COLUMNS, 0)
        textured_draws, plain_draws = np.random.default_rng(args.seed), np.random.default_rng(args.seed)
        for image, label in zip(images, labels):
            crops = split_frame(camera_sim.render(image, textured_draws, scene),
                                camera_sim.render(image, plain_draws, without_texture(scene)), contract)
            if crops is None:  # nothing found: counted wrong in every column
                continue
            for column in COLUMNS:
                right[column] += int(predictor.predict(crops[column]).index == label)
        rows.append({"scene": name, **{column: right[column] / len(labels) for column in COLUMNS}})
    print("| scene | " + " | ".join(COLUMNS) + " |")
    print("| --- |" + " --- |" * len(COLUMNS))
    for row in rows:
        print(f"| {row['scene']} | " + " | ".join(f"{row[column]:.2%}" for column in COLUMNS) + " |")
    write_json(args.out / "texture_split.json", {"model": str(args.model or "bundled"), "frames": len(labels),
                                                 "seed": args.seed, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
