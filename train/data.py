"""Fashion-MNIST: find, verify and parse the four official IDX files.

Sources are tried in order: an explicit directory (``--data-dir`` or
``FASHION_MNIST_DIR``), the Keras cache, the Debian/Ubuntu package
``dataset-fashion-mnist``, and last a download over HTTPS from the official mirrors into a
cache. Every file is checked by the SHA-256 of its decompressed bytes, so a recompressed
``.gz`` (as in the Debian package) is accepted and a corrupt one is not. Sizes are known in
advance, so nothing reads more than it should: a file is decompressed only up to its
expected size (a gzip bomb is refused after that many bytes, not after gigabytes), and a
download stops at ``download_cap`` bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
import sys
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from runtime.contract import Contract
from runtime.files import atomic_path

log = logging.getLogger(__name__)

# Zalando's own copies, over HTTPS: the S3 bucket of the official site (whose website
# endpoint, http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/, is HTTP only) through
# its REST endpoint, and the data folder of the official repository. Tried in this order.
MIRRORS = (
    "https://fashion-mnist.s3.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/",
)
MIRROR = MIRRORS[0]
KERAS_CACHE = Path.home() / ".keras" / "datasets" / "fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fashion-mnist"
HOW_TO_FIX = (
    "install the official copy with `apt-get install dataset-fashion-mnist` "
    "(Debian/Ubuntu), or download the four files from "
    f"{MIRROR} and pass --data-dir DIR or set FASHION_MNIST_DIR"
)


@dataclass(frozen=True)
class IdxFile:
    name: str
    sha256: str  # of the decompressed bytes
    size: int
    magic: int  # 0x0801: ubyte vector (labels); 0x0803: ubyte 3-tensor (images)
    shape: tuple[int, ...]


FILES = {
    "train_images": IdxFile(
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        47040016, 0x0803, (60000, 28, 28)),
    "train_labels": IdxFile(
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        60008, 0x0801, (60000,)),
    "test_images": IdxFile(
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        7840016, 0x0803, (10000, 28, 28)),
    "test_labels": IdxFile(
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        10008, 0x0801, (10000,)),
}


# Class names in label order (the dataset's own documentation); exported into every model.
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class DataError(RuntimeError):
    """A Fashion-MNIST file is missing, corrupt or not the official one."""


@dataclass
class FashionMNIST:
    """The official data set, as training reads it (``train.datasets.Dataset``)."""
    train_images: np.ndarray  # (60000, 28, 28) uint8
    train_labels: np.ndarray  # (60000,) uint8
    test_images: np.ndarray  # (10000, 28, 28) uint8
    test_labels: np.ndarray  # (10000,) uint8
    source: Path
    checksums: dict[str, str] = field(default_factory=dict)
    kind: ClassVar[str] = "fashion-mnist"
    val_images: ClassVar[None] = None  # no validation images of its own: they come out of the training set
    val_labels: ClassVar[None] = None
    test_is_validation: ClassVar[bool] = False  # the official test set

    @property
    def contract(self) -> Contract:
        """What a model of this data takes: gray 28x28 garments, bright on black, framed by
        the object preprocessing (the dataset's photos were cropped, negated and centred)."""
        height, width = self.train_images.shape[1:3]
        return Contract(CLASS_NAMES, height, width, channels=1, preprocessing="object")

    def describe(self) -> dict:
        """The report's "data": where the data came from and their checksums."""
        contract = self.contract
        return {"kind": self.kind, "source": str(self.source), "sha256": self.checksums,
                "image_size": contract.height, "color": "gray", "preprocess": contract.preprocessing,
                "test_is_validation": self.test_is_validation}


def parse_idx(raw: bytes, spec: IdxFile, path: Path) -> np.ndarray:
    """Parse IDX bytes strictly against the expected header of ``spec``."""
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes); {HOW_TO_FIX}")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != spec.magic:
        raise DataError(f"{path}: bad IDX magic number 0x{magic:08x}, expected "
                        f"0x{spec.magic:08x} for {spec.name}; {HOW_TO_FIX}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; {HOW_TO_FIX}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if dims != spec.shape:
        raise DataError(f"{path}: IDX dimensions {dims}, expected {spec.shape}; {HOW_TO_FIX}")
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes, expected {expected} for dimensions "
                        f"{dims} (truncated or padded); {HOW_TO_FIX}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_verified(path: Path, spec: IdxFile) -> tuple[np.ndarray, str]:
    """Read a raw or gzipped IDX file, verify its checksum, return (array, sha256).

    At most ``spec.size + 1`` bytes are read (decompressed): a larger file is refused there,
    so a small gzip bomb costs megabytes, not gigabytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            raw = f.read(spec.size + 1)  # gzip decompresses incrementally: no more than this
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: cannot be read or decompressed ({e}); {HOW_TO_FIX}") from e
    if len(raw) > spec.size:
        raise DataError(f"{path}: more than the {spec.size} bytes of {spec.name} (decompressed); "
                        f"refused without reading the rest: the file is corrupt or not Fashion-MNIST; "
                        f"{HOW_TO_FIX}")
    array = parse_idx(raw, spec, path)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != spec.sha256:
        raise DataError(f"{path}: SHA-256 {digest} does not match the official "
                        f"{spec.sha256}: the file is corrupt or not Fashion-MNIST; {HOW_TO_FIX}")
    return array, digest


def find_file(directory: Path, spec: IdxFile) -> Path | None:
    for candidate in (directory / spec.name, directory / f"{spec.name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_dir(directory: Path) -> FashionMNIST:
    """Load and verify the four files from one directory (raw or .gz)."""
    arrays, checksums = {}, {}
    for key, spec in FILES.items():
        path = find_file(directory, spec)
        if path is None:
            raise DataError(f"{directory}: {spec.name}[.gz] not found; {HOW_TO_FIX}")
        arrays[key], checksums[spec.name] = read_verified(path, spec)
    return FashionMNIST(**arrays, source=directory, checksums=checksums)


def download_cap(spec: IdxFile) -> int:
    """The most bytes a download of ``spec`` may take: its decompressed size plus 1% (gzip
    stores incompressible data with a few bytes per 16 KB block, so the .gz is never larger)."""
    return spec.size + spec.size // 100 + 4096


def fetch(url: str, target: Path, cap: int, desc: str) -> None:
    """Stream ``url`` into the file ``target``; refuse (DataError) beyond ``cap`` bytes."""
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=30) as response, open(target, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        if total is not None and total > cap:
            raise DataError(f"{total} bytes announced, more than the {cap} a Fashion-MNIST file can "
                            "take: refused")
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, desc=desc) as bar:
            while chunk := response.read(min(1 << 16, cap + 1 - received)):
                received += len(chunk)
                if received > cap:
                    raise DataError(f"more than the {cap} bytes a Fashion-MNIST file can take: "
                                    "refused and deleted")
                out.write(chunk)
                bar.update(len(chunk))


def download(directory: Path = DOWNLOAD_CACHE, mirror: str | tuple[str, ...] = MIRRORS) -> Path:
    """Download the four .gz files into ``directory`` with a progress bar, verified.

    ``mirror``: a base URL, or several tried in turn. A file larger than ``download_cap``
    or failing verification is deleted, never kept."""
    mirrors = (mirror,) if isinstance(mirror, str) else tuple(mirror)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot write {directory} ({e.strerror or e}) to download into: {HOW_TO_FIX}") from e
    for spec in FILES.values():
        target = directory / f"{spec.name}.gz"
        if target.is_file():
            continue
        problems = []
        for base in mirrors:
            url = f"{base}{spec.name}.gz"
            try:  # never keep a file that is too large or fails verification
                with atomic_path(target, lambda tmp, spec=spec: read_verified(tmp, spec)) as tmp:
                    fetch(url, tmp, download_cap(spec), spec.name)
                break
            except (urllib.error.URLError, OSError, DataError) as e:
                problems.append(f"{url} ({e})")
                log.warning("cannot download %s: %s", url, e)
        else:
            raise DataError(f"cannot download {spec.name}.gz: {'; '.join(problems)}; this machine may "
                            f"have no internet access: {HOW_TO_FIX}")
    return directory


def candidate_dirs() -> list[Path]:
    return [KERAS_CACHE, DEBIAN_DIR, DOWNLOAD_CACHE]


def load(data_dir: str | Path | None = None, *, allow_download: bool = True) -> FashionMNIST:
    """Load verified Fashion-MNIST, searching the sources in the documented order.

    An explicit ``data_dir`` (or ``FASHION_MNIST_DIR``) must hold valid files: a problem
    there is an error, not a silent fallback. Implicit locations with bad files are
    skipped with a warning.
    """
    explicit = data_dir or os.environ.get("FASHION_MNIST_DIR")
    if explicit:
        return load_dir(Path(explicit).expanduser())
    problems = []
    for directory in candidate_dirs():
        if not any(find_file(directory, spec) for spec in FILES.values()):
            continue
        try:
            data = load_dir(directory)
        except DataError as e:
            log.warning("skipping %s: %s", directory, e)
            problems.append(str(e))
            continue
        log.info("Fashion-MNIST from %s", directory)
        return data
    if not allow_download:
        raise DataError("no valid local copy of Fashion-MNIST found in "
                        f"{', '.join(map(str, candidate_dirs()))}; {HOW_TO_FIX}"
                        + ("".join(f"\n  {p}" for p in problems)))
    log.info("no local copy of Fashion-MNIST: downloading from %s", " or ".join(MIRRORS))
    return load_dir(download())


def stratified_split(labels: np.ndarray, fraction: float, seed: int,
                     min_each: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with ``fraction`` of every class held out, seeded.

    ``min_each``: at least this many of every class on both sides, where the class has
    enough images (a small class of your own still gets a validation image)."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(len(idx) * fraction))
        if min_each:
            n = max(0, min(max(n, min_each), len(idx) - min_each))
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def main(argv: list[str] | None = None) -> int:
    """python -m train.data: find (or download) and verify the data; exit 1 if impossible."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m train.data", description=main.__doc__)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--no-download", action="store_true", help="only look for local copies")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        data = load(args.data_dir, allow_download=not args.no_download)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"Fashion-MNIST OK in {data.source}: {len(data.train_labels)} train and "
          f"{len(data.test_labels)} test images, SHA-256 verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
