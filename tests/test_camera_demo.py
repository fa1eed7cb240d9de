"""The webcam demo on generated videos: headless JSON, recording, shutdown, and a real window."""

import json
import os
from dataclasses import replace
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
    from simulator.make_video import make_video

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


def test_poor_frames_get_advice_in_the_json_lines(tmp_path):
    """A dark frame, an empty backdrop and a garment cut by the frame's edge are said to be
    poor; a good one is not."""
    from simulator import camera_sim

    samples = np.load(ROOT / "camera_demo" / "samples.npz")
    good = camera_sim.render(samples["images"][0], np.random.default_rng(0))
    cut = np.full((480, 640, 3), 200, np.uint8)
    cut[:300, 250:400] = 40  # runs off the top: the segmentation is not sound
    frames = {"0_good": good, "1_dark": (good // 8), "2_empty": np.full((480, 640, 3), 200, np.uint8), "3_cut": cut}
    for name, frame in frames.items():
        cv2.imwrite(str(tmp_path / f"{name}.png"), frame)
    result = run_demo("--source", tmp_path, "--headless")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()[:-1]]
    assert [line["advice"] for line in lines] == [None, "too dark: add light", "nothing found in the box",
                                                  "move the object into the box"]


def test_advice_follows_the_prediction_and_greys_the_labels():
    from camera_demo.overlay import BAR, MOVE_IN, MUTED_BAR, NOT_SURE, NOTHING, TOO_DARK, advice, draw_overlay
    from runtime import Prediction, Roi

    labels = ("a", "b", "c")
    sure = Prediction(0, "a", 0.9, np.array([0.9, 0.06, 0.04]), labels, True, (200, 100, 100, 200))
    light = np.full((480, 640, 3), 180, np.uint8)
    box = Roi(128, 48, 384, 384)
    assert advice(light, sure, box) is None
    assert advice(np.full((480, 640, 3), 20, np.uint8), sure, box) == TOO_DARK
    assert advice(light, replace(sure, object_found=False, box=None), box) == NOTHING
    assert advice(light, replace(sure, object_found=False), box) == MOVE_IN  # a box, but not sound
    assert advice(light, replace(sure, box=(128, 100, 100, 200)), box) == MOVE_IN  # at the guide box's edge
    assert advice(light, replace(sure, box=(0, 0, 640, 480)), None) is None  # a photo cropped to the garment
    assert advice(light, replace(sure, confidence=0.3), box) == NOT_SURE
    assert advice(light, None, box) is None
    shown = draw_overlay(light.copy(), sure, box, 30.0, 1.0)
    muted = draw_overlay(light.copy(), replace(sure, confidence=0.3), box, 30.0, 1.0, note=NOT_SURE)
    assert tuple(shown[16, 112]) == BAR and tuple(muted[16, 112]) == MUTED_BAR  # the first label's bar
    assert (muted[400:432, 128:512] != light[400:432, 128:512]).any()  # the note, at the box's bottom
    assert advice(np.zeros((480, 640, 3), np.uint8), sure, box) == TOO_DARK
    bright_on_black = np.zeros((480, 640, 3), np.uint8)
    bright_on_black[150:330, 260:380] = 200  # a bright garment on black is not a dark frame
    assert advice(bright_on_black, sure, box) is None


def test_the_synthetic_stream_is_judged_alike_on_every_frame_of_a_held_garment():
    """The demo draws its overlay on the frame it is given: a held garment's later frames must
    not carry the earlier overlay into the preprocessing (it read as clutter at the edge)."""
    result = run_demo("--source", "synthetic", "--headless", "--max-frames", 150)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()[:-1]]
    held = 15  # SyntheticSource's default hold
    for start in range(0, len(lines), held):
        garment = lines[start:start + held]
        assert len({(line["label"], line["advice"], line["object_found"]) for line in garment}) == 1, garment
    assert sum(line["advice"] is None for line in lines) >= 0.8 * len(lines)


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
    counts = []

    def screen(index: int) -> Path | None:
        shot = tmp_path / f"screen{index}.png"
        taken = subprocess.run(["import", "-window", "root", "-display", display, str(shot)],
                               capture_output=True, timeout=30)
        return shot if taken.returncode == 0 else None

    try:
        deadline = time.time() + 30  # waits, not sleeps: on a busy machine both take seconds to start
        while screen(0) is None and time.time() < deadline:
            time.sleep(0.2)
        env = {**os.environ, "DISPLAY": display}
        demo = subprocess.Popen([sys.executable, "-m", "camera_demo", "--source", "synthetic",
                                 "--roi", "60,20,520,440", "--max-frames", "100000"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # the synthetic source shows each garment for a moment, some of them poor frames whose
        # answer is greyed: look at screens until a confident answer is drawn
        deadline = time.time() + 60
        while time.time() < deadline and demo.poll() is None:
            shot = screen(len(counts) + 1)
            counts.append(overlay_pixels(cv2.imread(str(shot))) if shot else (0, 0, 0))
            amber, panel, bars = counts[-1]
            if amber > 500 and panel > 3000 and bars > 200:
                break
            time.sleep(0.5)
        assert demo.poll() is None, demo.communicate()[1][-2000:]  # still running: it did not fail
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=30)
    finally:
        xvfb.terminate()
        xvfb.wait()
    amber, panel, bars = counts[-1]
    assert amber > 500 and panel > 3000 and bars > 200, counts[-10:]


def overlay_pixels(screen: np.ndarray) -> tuple[int, int, int]:
    """The overlay's pixels: the amber guide box, the dark label panel, its green confidence bars."""
    def near(colour, tolerance):
        return int(np.all(np.abs(screen.astype(int) - colour) < tolerance, axis=2).sum())
    return near((0, 220, 255), 40), near((30, 30, 30), 6), near((80, 200, 80), 30)


# --- the steps of the demo, one at a time ------------------------------------------------------

def test_exit_codes_follow_the_reason():
    from camera_demo.__main__ import exit_code

    assert {reason: exit_code(reason) for reason in ("ended", "quit", "max-frames", "no-display", "lost",
                                                    "interrupted")} == {
        "ended": 0, "quit": 0, "max-frames": 0, "no-display": 2, "lost": 3, "interrupted": 130}


def test_roi_flag_is_a_roi_and_a_bad_one_a_usage_error(capsys):
    import argparse

    from camera_demo.__main__ import parse_args, roi_arg
    from runtime import Roi

    assert parse_args(["--roi", "10,20,30,40"]).roi == Roi(10, 20, 30, 40)
    for bad in ("1,2,3", "a,b,c,d", "-1,0,5,5", "0,0,0,5", "1,2,3,4,5"):
        with pytest.raises(argparse.ArgumentTypeError):
            roi_arg(bad)
        with pytest.raises(SystemExit) as exit_info:
            parse_args([f"--roi={bad}"])
        assert exit_info.value.code == 2 and "argument --roi: roi" in capsys.readouterr().err


def test_top_k_must_be_positive_and_has_no_upper_literal(capsys):
    from camera_demo.__main__ import parse_args, shown_top_k

    assert parse_args([]).top_k == 3 and parse_args(["--top-k", "25"]).top_k == 25
    with pytest.raises(SystemExit):
        parse_args(["--top-k", "0"])
    assert "--top-k must be at least 1" in capsys.readouterr().err
    assert shown_top_k(3, ("a", "b")) == 2 and shown_top_k(25, tuple("abcdefghij")) == 10
    assert shown_top_k(1, tuple("abcde")) == 1


def test_frame_roi_clips_the_flag_or_uses_the_guide_box_of_a_live_camera():
    from camera_demo.__main__ import frame_roi
    from camera_demo.overlay import guide_box
    from runtime import Roi

    live, recorded = FlakyCamera(0, False), type("File", (), {"live": False})()
    assert frame_roi(Roi(600, 400, 100, 100), recorded, 640, 480) == Roi(600, 400, 40, 80)
    assert frame_roi(Roi(10, 10, 20, 20), live, 640, 480) == Roi(10, 10, 20, 20)
    assert frame_roi(None, live, 640, 480) == guide_box(640, 480) == Roi(128, 48, 384, 384)
    assert frame_roi(None, recorded, 640, 480) is None


def test_keys_json_lines_and_the_summary(capsys):
    from camera_demo.__main__ import emit_json_line, frame_record, handle_key, summary
    from runtime import Prediction

    assert [handle_key(k) for k in (ord("q"), 27, ord("s"), ord(" "), ord("x"), 255)] == [
        "quit", "quit", "screenshot", "pause", None, None]
    prediction = Prediction(1, "b", 0.654321, np.array([0.3, 0.654321, 0.045679]), ("a", "b", "c"))
    emit_json_line(frame_record(7, 1.234567, prediction, 2.34567, 1.23456))
    assert json.loads(capsys.readouterr().out) == {
        "frame": 7, "t": 1.2346, "label": "b", "index": 1, "confidence": 0.6543, "object_found": True,
        "advice": None, "latency_ms": 2.346, "infer_ms": 1.235}
    report = summary(4, 2.0, [1.0, 2.0, 3.0, 4.0], 1, "cam", Path("m.onnx"), "lost")
    assert report == {"summary": True, "frames": 4, "fps": 2.0, "p95_latency_ms": 3.85,
                      "median_latency_ms": 2.5, "dropped": 1, "source": "cam", "model": "m.onnx",
                      "reason": "lost"}
    empty = summary(0, 0.0, [], 0, "cam", Path("m.onnx"), "ended")
    assert empty["fps"] == 0.0 and empty["p95_latency_ms"] is None and empty["median_latency_ms"] is None


def test_stop_flag_turns_sigterm_into_a_stop_between_frames():
    from camera_demo.__main__ import StopFlag

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop = StopFlag().install()
        assert stop.signal is None
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # Python runs the handler at the next bytecode boundary of the main thread
        assert stop.signal == "SIGTERM"
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def panel_bottom(frame):
    """The last row of the overlay's dark label panel (its right edge has no text or bars)."""
    return int(np.flatnonzero(np.all(frame[:, 258] == (30, 30, 30), axis=1)).max())


@pytest.mark.parametrize("labels, top_k, rows", [(("a", "b"), 3, 2), (tuple("abcdefghijkl"), 5, 5),
                                                  (tuple("abcdefghijkl"), 12, 12)])
def test_overlay_lists_the_shown_labels_for_any_number_of_labels(labels, top_k, rows):
    from camera_demo.overlay import draw_overlay, panel_height
    from runtime import Prediction

    probabilities = np.random.default_rng(0).dirichlet(np.ones(len(labels)))
    index = int(probabilities.argmax())
    prediction = Prediction(index, labels[index], float(probabilities[index]), probabilities, labels)
    frame = draw_overlay(np.zeros((480, 640, 3), np.uint8), prediction, None, 30.0, 1.0, top_k)
    assert panel_bottom(frame) == panel_height(rows)
    small = draw_overlay(np.zeros((100, 300, 3), np.uint8), prediction, None, 30.0, 1.0, top_k)
    assert panel_bottom(small) <= 99  # as many rows as fit in a small frame, no error


def test_video_writer_renames_when_done_and_removes_the_temporary_file_on_an_error(tmp_path):
    from camera_demo.video import video_writer

    done, failed = tmp_path / "done.mp4", tmp_path / "failed.mp4"
    with video_writer(done, 10.0, (64, 48)) as writer:
        for _ in range(3):
            writer.write(np.full((48, 64, 3), 128, np.uint8))
    assert int(cv2.VideoCapture(str(done)).get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    with pytest.raises(RuntimeError, match="boom"):
        with video_writer(failed, 10.0, (64, 48)) as writer:
            writer.write(np.zeros((48, 64, 3), np.uint8))
            assert (tmp_path / ".failed.partial.mp4").exists()
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.mp4"]


# --- a model of another shape --------------------------------------------------------------------

@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory):
    """32x32 RGB, five labels, preprocessing "resize": not the Fashion-MNIST model."""
    from contract_models import make_model

    return make_model(tmp_path_factory.mktemp("models") / "rgb5.onnx")


@pytest.fixture(scope="module")
def two_label_model(tmp_path_factory):
    from contract_models import make_model

    return make_model(tmp_path_factory.mktemp("models") / "two.onnx", labels=("yes", "no"), height=28, width=28,
                      channels=1, kind="object")


def write_images(folder):
    """Colour images of several sizes, one of exactly 32x32, and a gray one: what a folder holds."""
    rng = np.random.default_rng(3)
    folder.mkdir(exist_ok=True)
    shapes = [(48, 64, 3), (32, 32, 3), (120, 90, 3), (40, 40), (480, 640, 3)]
    for i, shape in enumerate(shapes):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, shape, dtype=np.uint8))
    return sorted(folder.glob("*.png"))


def test_another_model_shape_runs_over_an_image_directory(rgb_model, tmp_path):
    from runtime import Predictor, Roi

    files = write_images(tmp_path / "images")
    result = run_demo("--model", rgb_model, "--source", tmp_path / "images", "--headless")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    frames, summary = lines[:-1], lines[-1]
    assert summary["frames"] == len(files) and summary["reason"] == "ended"
    predictor = Predictor(rgb_model)
    direct = [predictor.predict(cv2.imread(str(f), cv2.IMREAD_COLOR)) for f in files]
    assert [f["label"] for f in frames] == [p.label for p in direct]
    assert [f["index"] for f in frames] == [p.index for p in direct]
    assert {f["label"] for f in frames} <= set("abcde")
    # a roi larger than some images is clipped to each
    result = run_demo("--model", rgb_model, "--source", tmp_path / "images", "--headless", "--roi", "8,4,100,60")
    assert result.returncode == 0, result.stderr
    clipped = [predictor.predict(image, roi=Roi(8, 4, 100, 60).clipped(image.shape[1], image.shape[0]))
               for image in (cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files)]
    assert [json.loads(line)["index"] for line in result.stdout.splitlines()[:-1]] == [p.index for p in clipped]
    # camera-like frames of garments through the same model, recorded
    record = tmp_path / "out.mp4"
    result = run_demo("--model", rgb_model, "--source", "synthetic", "--headless", "--roi", "100,50,400,400",
                      "--max-frames", "5", "--record", record)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["frames"] == 5
    assert int(cv2.VideoCapture(str(record)).get(cv2.CAP_PROP_FRAME_COUNT)) == 5


def test_recording_an_image_folder_of_several_sizes_keeps_every_frame(tmp_path):
    """The video takes the first image's size; every other one is letterboxed into it, not dropped."""
    files = write_images(tmp_path / "images")
    record = tmp_path / "folder.mp4"
    result = run_demo("--source", tmp_path / "images", "--headless", "--record", record)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["frames"] == len(files) == 5
    playback = cv2.VideoCapture(str(record))
    assert int(playback.get(cv2.CAP_PROP_FRAME_COUNT)) == summary["frames"]
    first = cv2.imread(str(files[0]))
    assert (playback.get(cv2.CAP_PROP_FRAME_WIDTH), playback.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (
        first.shape[1], first.shape[0])


def test_letterbox_keeps_the_aspect_ratio_on_black():
    from camera_demo.video import letterbox

    tall = np.full((100, 50, 3), 200, np.uint8)
    boxed = letterbox(tall, (64, 48))
    assert boxed.shape == (48, 64, 3)
    assert (boxed[:, :20] == 0).all() and (boxed[:, 44:] == 0).all() and (boxed[:, 22:42] == 200).all()
    gray = letterbox(np.full((48, 64), 7, np.uint8), (64, 48))
    assert gray.shape == (48, 64, 3) and (gray == 7).all()
    same = np.zeros((48, 64, 3), np.uint8)
    assert letterbox(same, (64, 48)) is same


def test_a_two_label_model_shows_two_labels_without_error(two_label_model, capsys):
    from contextlib import ExitStack

    from camera_demo.__main__ import Demo, parse_args
    from camera_demo.overlay import panel_height
    from runtime import Predictor

    args = parse_args(["--model", str(two_label_model), "--headless", "--top-k", "3"])
    camera = FlakyCamera(0, False)  # live: the guide box is used
    with ExitStack() as resources:
        demo = Demo(args, Predictor(args.model), camera, resources)
        frame = np.zeros((480, 640, 3), np.uint8)
        frame[150:330, 260:380] = 200  # a bright object on a dark backdrop
        assert demo.on_frame(frame, time.perf_counter()) is None
    assert demo.top_k == 2 and demo.frames == 1 and demo.prediction.label in ("yes", "no")
    assert panel_bottom(frame) == panel_height(2)
    line = json.loads(capsys.readouterr().out)
    assert line["frame"] == 1 and line["label"] == demo.prediction.label and line["object_found"]
