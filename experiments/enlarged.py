"""python -m experiments.enlarged: images the garment fills, at another size than the model's.

A product photo, or the dataset's own image at another size, is filled by the garment: it
covers much of the border that the ``object`` preprocessing fits the backdrop to. This
enlarges official test images (bicubic) to each of ``--sizes`` pixels a side, as they are
(bright on black) and inverted (dark on a light page, as the photo was), and classifies them
through ``Predictor.predict``, beside the same images as arrays of the model's size.
``--compare GIT_REF`` also runs ``runtime/preprocess.py`` as it was at that commit on the same
images. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.enlarged", description=__doc__)
    p.add_argument("--model", type=Path, default=None, help="default: the bundled int8 model")
    p.add_argument("--n", type=int, default=1000, help="the first N official test images")
    p.add_argument("--sizes", default="84,280", help="sides to enlarge to, in pixels")
    p.add_argument("--compare", metavar="GIT_REF", default=None)
    p.add_argument("--out", type=Path, default=Path("artifacts/enlarged"))
    args = p.parse_args(argv)
    import cv2

    from runtime import Predictor
    from runtime.files import write_json
    from runtime.preprocess import prepare
    from train import data as fmnist
    from train.camera_eval import baseline_preprocessing, classify_with

    predictor = Predictor(args.model)
    dataset = fmnist.load()
    images, labels = dataset.test_images[:args.n], dataset.test_labels[:args.n]
    preparations = {"now": prepare}
    if args.compare:
        preparations[args.compare] = baseline_preprocessing(args.compare).prepare
    arrays = float(np.mean([predictor.predict(image).index == label for image, label in zip(images, labels)]))
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for inverted in (False, True):
            enlarged = [cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC) for image in images]
            enlarged = [255 - image for image in enlarged] if inverted else enlarged
            row = {"size": size, "inverted": inverted}
            for name, prepare_with in preparations.items():
                row[name] = float(np.mean([classify_with(predictor, prepare_with, image)[0] == label
                                           for image, label in zip(enlarged, labels)]))
            rows.append(row)
    print(f"{len(labels)} official test images; as {predictor.contract.height}x{predictor.contract.width} "
          f"arrays: {arrays:.2%}")
    print("| size | as | " + " | ".join(preparations) + " |")
    print("| --- | --- |" + " --- |" * len(preparations))
    for row in rows:
        shown = "dark on light" if row["inverted"] else "bright on black"
        print(f"| {row['size']} | {shown} | " + " | ".join(f"{row[name]:.2%}" for name in preparations) + " |")
    write_json(args.out / "enlarged.json", {"model": str(args.model or "bundled"), "images": len(labels),
                                            "arrays": arrays, "compare": args.compare, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
