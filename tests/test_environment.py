"""The environment `make` installs is the lock's: every locked package that is installed has the
lock's exact version (requirements.lock; `make lock` refreshes it, `make test-latest` sets
FASHION_EDGE_LOCK=/dev/null to run the suite on the newest releases instead)."""

import importlib.metadata
import os
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

LOCK = Path(os.environ.get("FASHION_EDGE_LOCK") or Path(__file__).parents[1] / "requirements.lock")
# What `python -m venv` puts in every venv: the lock pins them where a package needs them
# (TensorFlow needs setuptools), a runtime-only venv keeps the seeded ones
SEEDED = {"pip", "setuptools", "wheel"}


def locked_versions(text: str) -> dict[str, str]:
    """name -> version of the pins that apply here (`name==version ; marker` lines)."""
    pins = {}
    for line in text.splitlines():
        requirement, _, marker = line.partition(";")
        if line.startswith((" ", "#")) or "==" not in requirement:
            continue
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        name, version = requirement.split("==")
        pins[canonicalize_name(name.split("[")[0].strip())] = version.strip()
    return pins


def test_the_lock_reads_markers_and_extras():
    text = "# a comment\nnumpy==2.4.6 ; python_full_version < '3.0'\nnumpy==9.9 ; python_full_version >= '3.0'\n" \
           "uvicorn[standard]==0.55.0\n    # via fashion-edge\nopencv_python==5.1.0.95\n"
    assert locked_versions(text) == {"numpy": "9.9", "uvicorn": "0.55.0", "opencv-python": "5.1.0.95"}


def test_installed_versions_are_the_locks():
    pins = locked_versions(LOCK.read_text())
    if not pins:
        pytest.skip(f"no lock in use ({LOCK}): make test-latest")
    installed = {}
    for name in set(pins) - SEEDED:  # the copy imports find first (setuptools puts vendored copies on sys.path too)
        try:
            installed[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    differ = {name: f"{installed[name]} installed, {version} locked"
              for name, version in pins.items() if name in installed and installed[name] != version}
    assert not differ, f"not the lock's versions (run `make` to install them, or `make lock` on purpose): {differ}"
    assert {"numpy", "onnxruntime"} <= set(pins) & set(installed)  # the runtime's own were checked
