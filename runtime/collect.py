"""Collecting training images: DIR/LABEL/*.png (or .jpg), the layout ``python -m train --data DIR`` reads.

Shared by the camera demo (``--collect DIR --label NAME``) and the server (``POST /v1/collect``):
what a label may be, where its images go, and the names they get (generated, never overwriting).
Images are written through ``runtime.files.atomic_path``, so a half-written PNG never appears
under its final name (the temporary one starts with a dot, and is not counted).
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import secrets
import sys
import time
import unicodedata
from pathlib import Path

MAX_LABEL_CHARS = 64
MAX_LABEL_BYTES = 255  # a folder name, in UTF-8: what Linux and macOS file systems allow
NAME_LABEL_BYTES = 64  # how much of the label a file name repeats (file names are limited to 255 bytes too)
# Folder names ``python -m train --data DIR`` reads as splits, not classes: lower-cased name -> the split it is.
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
SUFFIXES = (".png", ".jpg")  # lossless uploads and camera frames are stored as PNG, lossy ones as JPEG
JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})  # what operating systems leave: training skips them
LABEL_RULES = (f"1 to {MAX_LABEL_CHARS} characters (after NFC normalisation): letters, marks, digits, punctuation "
               "and symbols of any script, and inner spaces; no other space, separator, control, format (such as "
               "a zero-width joiner, a direction mark or a BOM), private-use or unassigned character; no / or \\; "
               "not starting with a dot or a space, not ending with a space; not a split's name (train, val, valid, "
               "validation, test) nor an operating system's file (Thumbs.db, desktop.ini, __MACOSX), in any case")
KINDS = {"Cc": "a control character", "Cf": "an invisible format character", "Cs": "half of a surrogate pair, "
         "not valid text: a name that is not UTF-8?", "Co": "a private-use character",
         "Cn": "an unassigned code point", "Zs": "a space other than the plain space", "Zl": "a line separator",
         "Zp": "a paragraph separator"}


def forbidden(char: str) -> bool:
    """Whether ``char`` may not be in a label: what Unicode calls Other (C*) or Separator (Z*) but the plain space,
    which is exactly what ``str.isprintable`` refuses, and the path separators. Invisible or look-alike
    characters would make two folders that look like one label, or one that a file system or zip tool mangles."""
    return not char.isprintable() or char in "/\\"


def describe(char: str) -> str:
    """``char`` for a message: its code point, name and why it is refused."""
    name = unicodedata.name(char, "")
    kind = KINDS.get(unicodedata.category(char), "a path separator")
    return f"U+{ord(char):04X}{' ' + name if name else ''} ({kind})"


def check_label(label: str) -> str:
    """``label`` as its class folder's name (NFC), else ``ValueError`` saying why and what to do.

    The one rule for labels: the server's POST /v1/collect, the camera demo's ``--label`` and
    ``python -m train --data DIR``'s class folders all apply it, so whatever is collected is read by training
    as the same class, and a folder training refuses cannot be collected into. NFC: an NFD label (as macOS
    may type it) and its NFC form are one label, stored in one folder."""
    name = unicodedata.normalize("NFC", label)
    if not name:
        raise ValueError("the label is empty: give the class a name")
    if len(name) > MAX_LABEL_CHARS:
        raise ValueError(f"the label has {len(name)} characters; at most {MAX_LABEL_CHARS}: shorten it")
    bad = next((char for char in name if forbidden(char)), None)
    if bad is not None:
        raise ValueError(f"bad label {label!r}: it holds {describe(bad)}: remove it (a label holds letters, marks, "
                         "digits, punctuation and symbols of any script, and plain spaces)")
    if name.startswith(".") or name.startswith(" ") or name.endswith(" "):
        raise ValueError(f"bad label {label!r}: a label cannot start with a dot (a hidden folder) or start or end "
                         "with a space: remove them")
    if name.lower() in SPLIT_NAMES:
        raise ValueError(f"the label cannot be {name!r}: python -m train --data reads a folder so named as a split "
                         "(train/ val/ test/), not a class; name it otherwise")
    if name.lower() in JUNK_NAMES:
        raise ValueError(f"the label cannot be {name!r}: it is the name of an operating system's file, which "
                         "training skips; name it otherwise")
    size = len(name.encode("utf-8"))
    if size > MAX_LABEL_BYTES:
        raise ValueError(f"the label takes {size} bytes in UTF-8; a folder name may take at most {MAX_LABEL_BYTES}: "
                         "shorten it")
    return name


def _class(ranges: list[tuple[int, int]]) -> str:
    """The inside of a regex character class of these ranges of code points: ``\\uXXXX`` escapes in the BMP (what
    both Python and ECMA-262 read), literal characters beyond (ECMA-262 with the u flag, as JSON Schema says)."""
    def char(code: int) -> str:
        return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)

    return "".join(char(a) if a == b else f"{char(a)}-{char(b)}" for a, b in ranges)


def _allowed_ranges() -> list[tuple[int, int]]:
    """The code points ``forbidden`` lets through, as (first, last) runs, from this Python's Unicode database."""
    runs, start = [], 0
    for refused, group in itertools.groupby(range(sys.maxunicode + 1), key=lambda code: forbidden(chr(code))):
        length = sum(1 for _ in group)
        if not refused:
            runs.append((start, start + length - 1))
        start += length
    return runs


def _either_case(word: str) -> str:
    """``word`` matched in any case, without an inline flag (ECMA-262 has none): ``[tT][rR]...``; the Kelvin
    sign is a K once NFC-normalised, as ``check_label`` sees it."""
    letters = {"k": "[kK\\u212a]"}
    return "".join(letters.get(c, f"[{c}{c.upper()}]") if c.isalpha() else re.escape(c) for c in word)


@functools.cache
def label_pattern() -> str:
    """``check_label``'s rule as one regex, for the API's schema: exactly the same labels, as long as the NFC form
    has as many characters as the label sent (the rule counts the NFC form's). Built from the same ``forbidden``:
    the characters allowed, about 700 runs of code points, in one class (a schema-driven test generator such as
    Hypothesis expands a class code point by code point: the allowed ones are a seventh of the refused ones),
    the rest in lookaheads. Computed on first use: it takes a tenth of a second."""
    names = "|".join(_either_case(word) for word in sorted({*SPLIT_NAMES, *JUNK_NAMES}))
    allowed = _class(_allowed_ranges())
    return f"^(?![ .])(?!.* $)(?!(?:{names})$)[{allowed}]{{1,{MAX_LABEL_CHARS}}}$"


def __getattr__(name: str) -> str:
    """``LABEL_PATTERN``, computed when first asked for (the camera demo and training never need it)."""
    if name == "LABEL_PATTERN":
        return label_pattern()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def name_stem(label: str) -> str:
    """The label as the start of a file name: at most ``NAME_LABEL_BYTES`` of UTF-8, whole characters."""
    return label.encode("utf-8")[:NAME_LABEL_BYTES].decode("utf-8", "ignore").rstrip() or "image"


def new_image_path(folder: Path, label: str, number: int, unique: bool = False, suffix: str = ".png") -> Path:
    """A free file name in ``folder``: ``LABEL_YYYYmmdd_HHMMSS_NNNN.png`` (or ``suffix``), ``number`` counting up
    past any name already taken. ``unique``: a random tag too (``..._NNNN_3fa29c.png``), for writers in several
    processes at once (the server's workers), which cannot see each other's counters."""
    stamp = time.strftime("%Y%m%d_%H%M%S")
    stem = name_stem(label)
    while True:
        tag = f"_{secrets.token_hex(3)}" if unique else ""
        path = folder / f"{stem}_{stamp}_{number:04d}{tag}{suffix}"
        if not path.exists():
            return path
        number += 1


def count_images(folder: Path) -> int:
    """The images collected in ``folder`` (0 when it is not a folder), not counting atomic_path's hidden temporary
    files."""
    try:
        with os.scandir(folder) as entries:
            return sum(1 for e in entries if e.name.endswith(SUFFIXES) and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):  # nothing yet, or a file in the way (writing it will say)
        return 0


def stored_bytes(root: Path) -> int:
    """What the images collected under ``root`` take (its label folders' images, hidden files too: a temporary
    file being written counts)."""
    total = 0
    try:
        with os.scandir(root) as labels:
            folders = [e.path for e in labels if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                total += sum(e.stat(follow_symlinks=False).st_size for e in entries if e.is_file(follow_symlinks=False))
        except OSError:  # removed meanwhile
            continue
    return total


def count_labels(root: Path) -> int:
    """The class folders in ``root`` (not hidden ones)."""
    try:
        with os.scandir(root) as entries:
            return sum(1 for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return 0
