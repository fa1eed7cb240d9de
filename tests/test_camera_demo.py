"""The webcam demo on generated videos: headless JSON, recording, shutdown, and a real window."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
ROOT = Path(__file__).parents[1]
HOLD = 8  # frames per garment in the generated video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A 640x480 video of camera-like frames: 30 garments (3 per class), HOLD frames each."""
    from camera_demo.make_video import make_video

    path = tmp_path_factory.mktemp("video") / "garments.mp4"
    return path, make_video(path, garments=30, hold=HOLD)


def run_demo(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "camera_demo", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, **kwargs)


def test_headless_video_gives_labels_and_a_summary(video, tmp_path):
    path, labels = video
    record = tmp_path / "annotated.mp4"
    result = run_demo("--source", path, "--headless", "--record", record)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    frames, summary = lines[:-1], lines[-1]
    assert summary["summary"] is True and summary["frames"] == len(labels) * HOLD == len(frames)
    assert summary["reason"] == "ended" and summary["fps"] > 0 and summary["p95_latency_ms"] > 0
    assert [f["frame"] for f in frames] == list(range(1, len(frames) + 1))
    predicted = np.array([f["index"] for f in frames]).reshape(len(labels), HOLD)
    majority = np.array([np.bincount(row, minlength=10).argmax() for row in predicted])
    assert (majority == labels).mean() >= 0.8, (majority, labels)
    playback = cv2.VideoCapture(str(record))  # the recording is finalised and playable
    assert int(playback.get(cv2.CAP_PROP_FRAME_COUNT)) == summary["frames"]
    assert not list(tmp_path.glob(".*partial*"))


class FlakyCamera:
    """A live source that delivers frames, vanishes, and (optionally) comes back."""
    live = True
    name = "flaky camera"

    def __init__(self, frames_before: int, comes_back: bool):
        self.left, self.comes_back, self.reopened = frames_before, comes_back, 0

    def read(self):
        if self.left <= 0:
            return None
        self.left -= 1
        return np.zeros((48, 64, 3), np.uint8)

    def reopen(self):
        self.reopened += 1
        if self.comes_back and self.reopened >= 2:
            self.left, self.comes_back = 5, False
            return True
        return False

    def close(self):
        pass


@pytest.mark.parametrize("comes_back", [True, False])
def test_a_vanished_camera_is_reopened_or_reported_lost(comes_back):
    from camera_demo.capture import CaptureThread

    camera = FlakyCamera(frames_before=5, comes_back=comes_back)
    capture = CaptureThread(camera, reconnect_s=1.0, retry_s=0.05).start()
    frames = 0
    while capture.take(timeout=3.0) is not None:
        frames += 1
        time.sleep(0.01)  # a consumer slower than the camera: stale frames are dropped
    capture.stop()
    assert capture.ended and capture.lost
    assert camera.reopened >= (2 if comes_back else 3)
    assert frames + capture.dropped == (10 if comes_back else 5)


def test_max_frames_and_image_directory(tmp_path):
    samples = np.load(ROOT / "camera_demo" / "samples.npz")
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.png"), samples["images"][i])
    (tmp_path / "notes.txt").write_text("not an image")
    result = run_demo("--source", tmp_path, "--headless", "--max-frames", "3")
    summary = json.loads(result.stdout.splitlines()[-1])
    assert result.returncode == 0 and summary["frames"] == 3 and summary["reason"] == "max-frames"
    labels = [json.loads(line)["index"] for line in result.stdout.splitlines()[:-1]]
    from runtime import Predictor

    direct = [Predictor().predict(image).index for image in samples["images"][:3]]
    assert labels == direct  # the files give what the arrays give
    assert np.mean(np.array(labels) == samples["labels"][:3]) >= 2 / 3


def test_no_camera_is_an_actionable_error():
    result = run_demo("--source", "7", "--headless")
    assert result.returncode == 2
    assert "tried index 7" in result.stderr and "--source" in result.stderr


def test_ctrl_c_finalises_the_recording(tmp_path):
    record = tmp_path / "live.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "camera_demo", "--source", "synthetic", "--headless",
                             "--record", str(record)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["reason"] == "interrupted" and summary["frames"] > 0
    assert int(cv2.VideoCapture(str(record)).get(cv2.CAP_PROP_FRAME_COUNT)) == summary["frames"]


@pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("import") is None,
                    reason="needs Debian's xvfb and imagemagick (installed by .ci/run)")
def test_window_under_xvfb_draws_the_overlay(video, tmp_path):
    path, _ = video
    display = ":97"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "800x600x24"], stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        env = {**os.environ, "DISPLAY": display}
        demo = subprocess.Popen([sys.executable, "-m", "camera_demo", "--source", "synthetic",
                                 "--roi", "60,20,520,440", "--max-frames", "100000"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(5.0)
        shot = tmp_path / "screen.png"
        subprocess.run(["import", "-window", "root", "-display", display, str(shot)], check=True, timeout=30)
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=30)
    finally:
        xvfb.terminate()
        xvfb.wait()
    screen = cv2.imread(str(shot))
    # the overlay: an amber guide box and the dark label panel with green confidence bars
    amber = np.all(np.abs(screen.astype(int) - (0, 220, 255)) < 40, axis=2).sum()
    panel = np.all(np.abs(screen.astype(int) - (30, 30, 30)) < 6, axis=2).sum()
    bars = np.all(np.abs(screen.astype(int) - (80, 200, 80)) < 30, axis=2).sum()
    assert amber > 500 and panel > 3000 and bars > 200, (amber, panel, bars)
