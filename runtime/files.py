"""Atomic file writes: a temporary file beside the target, verified, then renamed into place.

The one way every package writes a result (models, reports, plots, videos, JSON), so a
kill or Ctrl-C never leaves a half-written file under the final name.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


# errno values that mean "this path cannot be written", whatever the writer was
WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG,
                          errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT})
PARTIAL = re.compile(r"^\.(?P<stem>.+)\.partial(?P<suffix>\.[^.]*)?$")  # atomic_path's temporary name


@contextmanager
def atomic_path(path: Path, verify: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success verify it and rename it over ``path``.

    An exception or Ctrl-C (KeyboardInterrupt) removes the temporary file and leaves any
    existing ``path`` untouched. The temporary name keeps the suffix, so writers that pick
    a format by suffix (Keras, OpenCV, matplotlib) still do.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield tmp
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def write_json(path: Path, payload: object) -> Path:
    """Indented, strict JSON (NaN and infinity are refused rather than written bare)."""
    return write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def check_writable(directory: Path) -> None:
    """Create ``directory`` if needed and a file in it, or raise ``OSError``: a command-line tool
    checks its output folder before minutes of work rather than after them."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "a file is in the way, not a directory", str(directory))
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
        pass


def final_name(filename: str | Path) -> Path:
    """The file a temporary ``.NAME.partial.SUFFIX`` of ``atomic_path`` was going to become."""
    path = Path(filename)
    match = PARTIAL.match(path.name)
    return path.with_name(match["stem"] + (match["suffix"] or "")) if match else path


def write_error(error: OSError, default: Path) -> str:
    """One line for an ``OSError`` met while writing results under ``default`` (a full disk, a
    read-only folder): "cannot write PATH: REASON", naming the final file, not the temporary one."""
    where = final_name(error.filename) if error.filename else default
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno in WRITE_ERRNOS or error.errno is None:
        return f"cannot write {where}: {reason}"
    return f"{where}: {reason}"
