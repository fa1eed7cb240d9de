"""Which files of a data folder training reads, and how: hidden files and an operating system's
folders skipped, links followed inside the folder only, only regular files opened (never a FIFO
or a device: reading one blocks, or never ends), none over ``runtime.images.MAX_BYTES`` (its
``read_file`` reads them)."""

from __future__ import annotations

import logging
import stat
import unicodedata
from pathlib import Path

from runtime.collect import JUNK_NAMES
from runtime.images import check_regular

log = logging.getLogger("train.folders")  # its warnings are the folder loader's


def nfc(name: str) -> str:
    """A folder name as a label: NFC, so a name typed on macOS (NFD) matches everywhere."""
    return unicodedata.normalize("NFC", name)


def junk(name: str) -> bool:
    """An operating system's file or folder (Thumbs.db, desktop.ini, __MACOSX), as the label rule sees names."""
    return nfc(name).lower() in JUNK_NAMES


def hidden(path: Path) -> bool:
    return path.name.startswith(".") or junk(path.name)


def visible_dirs(directory: Path) -> list[Path]:
    return sorted((p for p in directory.iterdir() if p.is_dir() and not hidden(p)), key=lambda p: nfc(p.name))


def log_junk_dirs(directory: Path, root: Path) -> None:
    """Say which folders of ``directory`` are skipped as an operating system's: not silently, as a class's images
    put there (by hand, or by a collector before the label rule refused such names) would be lost."""
    for path in sorted(directory.iterdir()):
        if junk(path.name) and path.is_dir():
            log.warning("skipped %s/: an operating system's folder (Thumbs.db, desktop.ini, __MACOSX), not a class; "
                        "rename it if it holds a class's images", path.relative_to(root).as_posix())


def resolved(path: Path, top: Path) -> Path:
    """``path`` with its links followed, else ValueError: a broken link, a loop, or a link out of ``top`` (the data
    folder, resolved): reading through it could read anything (/etc, /proc, another user's files)."""
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        raise ValueError("a broken link (or removed meanwhile)") from None
    except (OSError, RuntimeError):  # a link loop (RuntimeError before Python 3.13)
        raise ValueError("a link loop") from None
    if not real.is_relative_to(top):
        raise ValueError(f"a link to {real}, outside the data folder: copy what it holds into the folder")
    return real


def kind_of(path: Path, top: Path) -> str:
    """"dir" or "file" for what ``files_under`` reads, else ValueError saying why it is skipped: not ``resolved``, a
    FIFO, a device or a socket (reading one blocks, or never ends: it is never opened), a file over
    ``runtime.images.MAX_BYTES``. Decided from ``stat``, which opens nothing."""
    real = resolved(path, top)
    try:
        info = real.stat()
    except OSError as e:  # removed meanwhile, no permission
        raise ValueError(f"cannot be read: {e.strerror or e}") from None
    if stat.S_ISDIR(info.st_mode):
        return "dir"
    check_regular(info)
    return "file"


def files_under(directory: Path, top: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every visible regular file below ``directory``, sub-folders too, hidden ones skipped; and the entries
    skipped for what they are, with the reason (``kind_of``).

    Symbolic links are followed inside the data folder ``top`` only, but each real folder is read once,
    and never one that holds ``directory`` itself (``ln -s .. loop`` would read every other class into this one)."""
    start = directory.resolve()
    found, skipped, seen, stack = [], [], set(), [directory]
    while stack:  # depth-first, in name order, without recursion (a deep tree is no RecursionError)
        folder = stack.pop()
        real = folder.resolve()
        if real in seen or real in start.parents:  # start itself is seen first
            continue
        seen.add(real)
        subfolders = []
        for path in sorted(folder.iterdir()):
            if hidden(path):
                continue
            try:
                kind = kind_of(path, top)
            except ValueError as e:
                skipped.append((path, str(e)))
                continue
            (subfolders if kind == "dir" else found).append(path)
        stack.extend(reversed(subfolders))
    return found, skipped
