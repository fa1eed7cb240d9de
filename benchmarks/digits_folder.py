"""Write scikit-learn's 1,797 real 8x8 handwritten digits as a folder of PNGs, the layout
`python -m train --data DIR` reads: DIR/train/<digit>/*.png and DIR/test/<digit>/*.png (360 held out,
seeded). Needs scikit-learn (`pip install scikit-learn`), which ships the digits: nothing is downloaded.

    python benchmarks/digits_folder.py /tmp/digits
    python -m train --data /tmp/digits --out /tmp/digits_run --epochs 15 --qat-epochs 2
    python -m export --model /tmp/digits_run/qat_model.h5 --out /tmp/digits_run
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

TEST_IMAGES = 360


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("error: needs scikit-learn: pip install scikit-learn", file=sys.stderr)
        return 2
    digits, root = load_digits(), Path(args[0])
    for n, i in enumerate(np.random.default_rng(0).permutation(len(digits.images))):
        folder = root / ("test" if n < TEST_IMAGES else "train") / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * (255 / 16)).astype(np.uint8)).save(folder / f"{i}.png")
    print(f"wrote {len(digits.images)} PNGs into {root}/train and {root}/test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
