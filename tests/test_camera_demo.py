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
    from runtime import camera_sim

    samples = np.load(ROOT / "camera_demo" / "samples.npz")
    rng = np.random.default_rng(11)
    picks = np.concatenate([np.flatnonzero(samples["labels"] == c)[:3] for c in range(10)])
    rng.shuffle(picks)
    path = tmp_path_factory.mktemp("video") / "garments.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    for i in picks:
        frame = camera_sim.render(samples["images"][i], rng)
        for _ in range(HOLD):
            writer.write(frame)
    writer.release()
    return path, samples["labels"][picks]


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


def test_max_frames_and_image_directory(tmp_path):
    samples = np.load(ROOT / "camera_demo" / "samples.npz")
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.png"), samples["images"][i])
    (tmp_path / "notes.txt").write_text("not an image")
    result = run_demo("--source", tmp_path, "--headless", "--max-frames", "3")
    summary = json.loads(result.stdout.splitlines()[-1])
    assert result.returncode == 0 and summary["frames"] == 3 and summary["reason"] == "max-frames"
    labels = [json.loads(line)["index"] for line in result.stdout.splitlines()[:-1]]
    assert labels == samples["labels"][:3].tolist()


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
                                 "--max-frames", "100000"], cwd=ROOT, env=env,
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
