"""benchmarks/example_folders.py: the README's own-classes walkthrough starts from these folders."""

import subprocess
import sys
from pathlib import Path

import pytest

from train.folders import load_folder

ROOT = Path(__file__).parents[1]


def test_digits_and_faces_folders(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("skimage")
    done = subprocess.run([sys.executable, "benchmarks/example_folders.py", str(tmp_path), "--only", "digits,faces"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    digits, faces = load_folder(tmp_path / "digits"), load_folder(tmp_path / "faces")
    assert digits.contract.labels == tuple("0123456789") and len(digits.test_labels) == 359
    assert len(digits.train_labels) + len(digits.test_labels) == 1797 and not digits.test_is_validation
    assert faces.contract.labels == ("face", "not a face") and faces.counts["test"] == {"face": 25, "not a face": 25}
    assert digits.contract.channels == faces.contract.channels == 1
    again = subprocess.run([sys.executable, "benchmarks/example_folders.py", str(tmp_path), "--only", "faces,nope"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "unknown example nope" in again.stderr
