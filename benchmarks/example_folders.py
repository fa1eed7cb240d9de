"""Example folders for `python -m train --data DIR`, built from images that packages ship
(nothing is downloaded). Each is written in the train/ + test/ layout, test/ held out:

    digits    scikit-learn's 1,797 real 8x8 handwritten digits, 10 classes (PNG; 359 held out)
    faces     scikit-image's lfw_subset: 100 faces and 100 non-faces, 25x25 (PNG; 50 held out)
    garments  colour photos: 5 distinct Fashion-MNIST classes rendered into 640x480 desk-camera
              frames by simulator.camera_sim (JPEG; 300 per class to train, 100 per class held out)
    messy     the garments photos with a tenfold imbalance, mixed formats (PNG, RGBA, 16-bit,
              JPEG with EXIF orientation, palette) and junk (empty, truncated, text, hidden files)
    objects   harder desk photos of 5 other classes: 320x240 to 1024x768, portrait and landscape,
              JPEG and PNG, the object 20-80% of the frame's height anywhere near the centre, on
              backdrops of any colour, light or dark (300 per class to train, 100 held out)

    pip install scikit-learn scikit-image      # or: pip install -e '.[examples]'
    python benchmarks/example_folders.py /tmp/folders [--only digits,faces]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXAMPLES = ("digits", "faces", "garments", "messy", "objects")
# distinct garments (Fashion-MNIST label: folder name); shirt/pullover/coat look alike at 64 px
GARMENTS = {0: "t-shirt", 1: "trouser", 7: "sneaker", 8: "bag", 9: "ankle boot"}
GARMENT_TRAIN, GARMENT_TEST = 300, 100  # per class
MESSY_RARE = ("bag", "sneaker")  # a tenth of the images of the other classes
OBJECTS = {1: "trouser", 3: "dress", 5: "sandal", 8: "bag", 9: "ankle boot"}
OBJECT_SIZES = ((320, 240), (640, 480), (800, 600), (1024, 768))  # (width, height), either way round


def split_write(root: Path, images, labels, names, test_fraction: float, save, seed: int = 0) -> int:
    """Write a seeded, stratified test split to root/test/<name>/ and the rest to root/train/<name>/."""
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        for n, i in enumerate(idx):
            folder = root / ("test" if n < n_test else "train") / names[c]
            folder.mkdir(parents=True, exist_ok=True)
            save(images[i], folder / f"{i:05d}")
    return len(labels)


def png(pixels: np.ndarray, stem: Path) -> None:
    Image.fromarray(pixels).save(stem.with_suffix(".png"))


def digits(root: Path) -> int:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255 / 16)).astype(np.uint8)  # 0-16 ink levels to 0-255
    return split_write(root, images, d.target, [str(k) for k in range(10)], 360 / 1797, png)


def faces(root: Path) -> int:
    from skimage.data import lfw_subset

    images = np.round(lfw_subset() * 255).astype(np.uint8)  # the first 100 are faces
    labels = np.repeat([0, 1], 100)
    return split_write(root, images, labels, ["face", "not a face"], 0.25, png)


def garment_frames(per_class: int, split: str, seed: int, classes: dict[int, str] = GARMENTS,
                   scene=None, sizes: tuple[tuple[int, int], ...] = ((640, 480),)):
    """(frames, labels): ``per_class`` official ``split`` images of each of ``classes``, each
    rendered into a BGR camera frame (``scene``, default ``camera_sim.DESK``) of a size drawn
    from ``sizes`` (width, height; either way round when there is more than one)."""
    from simulator.camera_sim import DESK, render
    from train import data as fmnist

    ds = fmnist.load()
    source = (ds.train_images, ds.train_labels) if split == "train" else (ds.test_images, ds.test_labels)
    rng = np.random.default_rng(seed)
    frames, labels = [], []
    for k, c in enumerate(classes):
        for i in rng.permutation(np.flatnonzero(source[1] == c))[:per_class]:
            size = sizes[0]
            if len(sizes) > 1:
                size = sizes[rng.integers(len(sizes))]
                size = size if rng.random() < 0.5 else size[::-1]  # portrait or landscape
            frames.append(render(source[0][i], rng, scene or DESK, size))
            labels.append(k)
    return frames, np.array(labels)


def jpeg(frame: np.ndarray, stem: Path, quality: int = 90) -> None:
    Image.fromarray(frame[..., ::-1]).save(stem.with_suffix(".jpg"), quality=quality)


def garments(root: Path) -> int:
    names = list(GARMENTS.values())
    count = 0
    for split, per_class, seed in (("train", GARMENT_TRAIN, 1), ("test", GARMENT_TEST, 2)):
        frames, labels = garment_frames(per_class, split, seed)
        for i, (frame, label) in enumerate(zip(frames, labels)):
            folder = root / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            jpeg(frame, folder / f"{i:05d}")
        count += len(frames)
    return count


def messy_save(frame: np.ndarray, stem: Path, kind: int) -> None:
    """One photo in one of five encodings that a phone, an editor or a script produces."""
    rgb = np.ascontiguousarray(frame[..., ::-1])
    if kind == 0:  # a phone JPEG stored sideways, upright only through its EXIF orientation
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90° clockwise to view
        Image.fromarray(np.rot90(rgb, 1)).save(stem.with_suffix(".jpeg"), quality=85, exif=exif.tobytes())
    elif kind == 1:  # a cut-out: RGBA PNG, transparent margin
        rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
        rgba[:20, :, 3] = 0
        Image.fromarray(rgba, "RGBA").save(stem.with_suffix(".png"))
    elif kind == 2:  # 16-bit gray PNG
        gray = np.asarray(Image.fromarray(rgb).convert("L"), np.uint16) * 257
        Image.fromarray(gray).save(stem.with_suffix(".png"))
    elif kind == 3:  # palette PNG, half size
        Image.fromarray(rgb).resize((320, 240)).quantize(64).save(stem.with_suffix(".png"))
    else:
        jpeg(frame, stem, quality=70)


def messy(root: Path) -> int:
    names = list(GARMENTS.values())
    rare = [names.index(n) for n in MESSY_RARE]
    rng = np.random.default_rng(3)
    count = 0
    for split, per_class, seed in (("train", GARMENT_TRAIN, 4), ("test", GARMENT_TEST, 5)):
        frames, labels = garment_frames(per_class, split, seed)
        for i, (frame, label) in enumerate(zip(frames, labels)):
            if split == "train" and label in rare and i % 10:  # keep one in ten: tenfold imbalance
                continue
            folder = root / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            messy_save(frame, folder / f"{i:05d}", int(rng.integers(5)))
            count += 1
    junk = root / "train" / names[0]
    (junk / "empty.jpg").write_bytes(b"")
    data = io.BytesIO()
    Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(data, "JPEG")
    (junk / "cut short.jpg").write_bytes(data.getvalue()[: len(data.getvalue()) // 3])
    (junk / "notes.txt").write_text("shot on Tuesday\n")
    (junk / "not really.png").write_bytes(b"<html>404</html>")
    (junk / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "train" / names[1] / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    hidden = root / "train" / ".thumbnails"
    hidden.mkdir(exist_ok=True)
    (hidden / "x.jpg").write_bytes(b"")
    return count


def objects(root: Path) -> int:
    from simulator.camera_sim import Scene

    scene = Scene(height_range=(0.2, 0.8), max_offset=0.15, texture=0.06, vignette=0.2, shadow=0.3,
                  backdrop_level=(120.0, 240.0), backdrop_tint=(0.3, 1.0), object_level=(10.0, 110.0),
                  dark_backdrop=0.3)
    names = list(OBJECTS.values())
    rng = np.random.default_rng(6)
    count = 0
    for split, per_class, seed in (("train", GARMENT_TRAIN, 7), ("test", GARMENT_TEST, 8)):
        frames, labels = garment_frames(per_class, split, seed, OBJECTS, scene, OBJECT_SIZES)
        for i, (frame, label) in enumerate(zip(frames, labels)):
            folder = root / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            if rng.random() < 0.5:
                jpeg(frame, folder / f"{i:05d}", quality=int(rng.integers(70, 95)))
            else:
                png(frame[..., ::-1], folder / f"{i:05d}")
        count += len(frames)
    return count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="a folder per example is written in here")
    p.add_argument("--only", default=",".join(EXAMPLES), help=f"comma-separated, from {', '.join(EXAMPLES)}")
    args = p.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(EXAMPLES))
    if unknown:
        p.error(f"unknown example {', '.join(unknown)}: choose from {', '.join(EXAMPLES)}")
    makers = {"digits": digits, "faces": faces, "garments": garments, "messy": messy, "objects": objects}
    for name in chosen:
        root = args.out / name
        if root.exists() and any(root.iterdir()):
            print(f"{root}: exists, not rewritten")
            continue
        try:
            n = makers[name](root)
        except ImportError as e:
            print(f"error: the {name} example needs {e.name}: pip install scikit-learn scikit-image",
                  file=sys.stderr)
            return 2
        print(f"{root}: {n} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
