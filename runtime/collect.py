"""Collecting training images: DIR/LABEL/*.png, the layout ``python -m train --data DIR`` reads.

Shared by the camera demo (``--collect DIR --label NAME``) and the server (``POST /v1/collect``):
what a label may be, where its images go, and the names they get (generated, never overwriting).
Images are written through ``runtime.files.atomic_path``, so a half-written PNG never appears
under its final name (the temporary one starts with a dot, and is not counted).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

MAX_LABEL_CHARS = 64
MAX_LABEL_BYTES = 255  # a folder name, in UTF-8: what Linux and macOS file systems allow
NAME_LABEL_BYTES = 64  # how much of the label a file name repeats (file names are limited to 255 bytes too)
# What a label may be, in one pattern (the API's schema shows it): 1 to 64 characters, no path separator
# (/ or \), no control character (C0, DEL, C1), not starting with a dot (so neither "." nor ".." nor a
# hidden folder) or a space, not ending with a space. Letters of any script, digits, inner spaces are fine.
_FORBIDDEN = r"/\\\u0000-\u001f\u007f-\u009f"
LABEL_PATTERN = rf"^[^ .{_FORBIDDEN}]([^{_FORBIDDEN}]{{0,{MAX_LABEL_CHARS - 2}}}[^ {_FORBIDDEN}])?$"
LABEL_RULES = (f"1 to {MAX_LABEL_CHARS} characters, no / or \\, no control characters, not starting with a dot "
               "or a space, not ending with a space")
_LABEL = re.compile(LABEL_PATTERN)


def check_label(label: str) -> str:
    """``label`` if it can be a class folder's name, else ``ValueError`` saying why."""
    if not label:
        raise ValueError("the label is empty")
    if len(label) > MAX_LABEL_CHARS:
        raise ValueError(f"the label has {len(label)} characters; at most {MAX_LABEL_CHARS}")
    if label in (".", ".."):
        raise ValueError(f"the label cannot be {label!r}")
    if not _LABEL.fullmatch(label):
        raise ValueError(f"bad label {label!r}: {LABEL_RULES}")
    try:
        size = len(label.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate
        raise ValueError(f"bad label {label!r}: not valid Unicode text") from None
    if size > MAX_LABEL_BYTES:
        raise ValueError(f"the label takes {size} bytes in UTF-8; a folder name may take at most {MAX_LABEL_BYTES}")
    return label


def name_stem(label: str) -> str:
    """The label as the start of a file name: at most ``NAME_LABEL_BYTES`` of UTF-8, whole characters."""
    return label.encode("utf-8")[:NAME_LABEL_BYTES].decode("utf-8", "ignore").rstrip() or "image"


def new_image_path(folder: Path, label: str, number: int, unique: bool = False) -> Path:
    """A free file name in ``folder``: ``LABEL_YYYYmmdd_HHMMSS_NNNN.png``, ``number`` counting up past any
    name already taken. ``unique``: a random tag too (``..._NNNN_3fa29c.png``), for writers in several
    processes at once (the server's workers), which cannot see each other's counters."""
    stamp = time.strftime("%Y%m%d_%H%M%S")
    stem = name_stem(label)
    while True:
        tag = f"_{secrets.token_hex(3)}" if unique else ""
        path = folder / f"{stem}_{stamp}_{number:04d}{tag}.png"
        if not path.exists():
            return path
        number += 1


def count_images(folder: Path) -> int:
    """The PNGs in ``folder`` (0 when it is not a folder), not counting atomic_path's hidden temporary files."""
    try:
        with os.scandir(folder) as entries:
            return sum(1 for e in entries if e.name.endswith(".png") and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):  # nothing yet, or a file in the way (writing it will say)
        return 0


def count_labels(root: Path) -> int:
    """The class folders in ``root`` (not hidden ones)."""
    try:
        with os.scandir(root) as entries:
            return sum(1 for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return 0
