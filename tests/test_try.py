"""`make try`: samples/try.py classifies the sample photos and clip with the bundled model.
(.ci/run also runs `make try` in a venv of its own and checks that it holds no TensorFlow.)"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("cv2")
ROOT = Path(__file__).parents[1]


def test_try_prints_answers_beside_the_truth_and_the_speed():
    result = subprocess.run([sys.executable, "samples/try.py"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    photos = re.search(r"(\d+) of (\d+) right", out)
    garments = re.search(r"(\d+) of (\d+) garments right; (\d+) frames .* at (\d+) frames/s", out)
    assert photos and garments, out
    assert int(photos[2]) == len(list((ROOT / "samples" / "photos").iterdir())) and int(photos[1]) >= int(photos[2]) - 2
    assert int(garments[2]) == 10 and int(garments[1]) >= 8 and int(garments[3]) == 60 and int(garments[4]) > 0
    assert re.search(r"median \d+ µs over 1000 calls", out)
    assert out.count("$ python -m ") == 2  # the commands a user would type, shown


def test_try_says_which_command_failed(tmp_path):
    """A broken sample (here: the clip missing) is an error naming the command, exit 1, no traceback."""
    import shutil

    copy = tmp_path / "samples"
    shutil.copytree(ROOT / "samples", copy)
    (copy / "desk.mp4").unlink()
    result = subprocess.run([sys.executable, str(copy / "try.py")], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "camera_demo --source samples/desk.mp4" in result.stderr
