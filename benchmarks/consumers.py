"""Our models in other people's runtimes: run inside the consumers' own environment
(``make consumers``: MediaPipe, tflite-support, ... which cannot share TensorFlow's), with
nothing of ours imported. Prints one JSON object.

    .venv-consumers/bin/python benchmarks/consumers.py metadata MODEL.tflite
    .venv-consumers/bin/python benchmarks/consumers.py mediapipe MODEL.tflite IMAGES.npy

``metadata``: what tflite-support's MetadataDisplayer (the reader of Android Studio's model
import) finds: the labels of the output tensor, the input's normalization and colour space.
``mediapipe``: MediaPipe Tasks' ImageClassifier on uint8 RGB images (N, H, W, 3): the top-1
label of each, the labels it knows, milliseconds per image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def metadata(model: Path) -> dict:
    from tflite_support import metadata as tflite_metadata

    displayer = tflite_metadata.MetadataDisplayer.with_model_file(str(model))
    meta = json.loads(displayer.get_metadata_json())
    graph = meta["subgraph_metadata"][0]
    image, scores = graph["input_tensor_metadata"][0], graph["output_tensor_metadata"][0]
    label_file = next(f["name"] for f in scores["associated_files"] if f["type"] == "TENSOR_AXIS_LABELS")
    normalization = next(u["options"] for u in image["process_units"] if u["options_type"] == "NormalizationOptions")
    return {"name": meta["name"], "version": meta["version"], "files": displayer.get_packed_associated_file_list(),
            "labels": displayer.get_associated_file_buffer(label_file).decode().splitlines(),
            "color_space": image["content"]["content_properties"]["color_space"],
            "mean": normalization["mean"], "std": normalization["std"]}


def mediapipe(model: Path, images: np.ndarray) -> dict:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(model)), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        top1, started = [], time.perf_counter()
        for image in images:
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            top1.append(result.classifications[0].categories[0].category_name)
        seconds = time.perf_counter() - started
    return {"top1": top1, "ms_per_image": round(1000 * seconds / max(len(images), 1), 4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("consumer", choices=("metadata", "mediapipe"))
    p.add_argument("model", type=Path)
    p.add_argument("images", type=Path, nargs="?", help=".npy of uint8 images (N, H, W, C)")
    args = p.parse_args(argv)
    if args.consumer == "metadata":
        result = metadata(args.model)
    else:
        if args.images is None:
            p.error(f"{args.consumer} needs IMAGES.npy")
        result = mediapipe(args.model, np.load(args.images))
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
