"""Faults: kills at the end of a stage, a diverging loss, bad arguments, unwritable outputs,
a full disk and a closed stdout end in a resume or a one-line error, never in lost work."""

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import QUICK_ARGS

ROOT = Path(__file__).parents[1]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

# python -c: run `python -m train ARGS` with a SIGKILL at one point of the end of the float stage
KILLER = """
import os, signal, sys
import train.stages as stages

def kill(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[1] == "after-fit":  # fit() returned; the model file is not written yet
    save_model = stages.save_model
    stages.save_model = lambda model, path, *a, **k: (
        kill() if path.name == stages.FLOAT_MODEL else save_model(model, path, *a, **k))
else:  # "after-save": the model file is written; train_state.json does not record it yet
    finish = stages.RunState.finish
    stages.RunState.finish = lambda self, stage, info: (
        kill() if stage == "float" else finish(self, stage, info))
from train.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def float_epochs_logged(text: str) -> int:
    return text.count("float epoch ")


# --- 1. a kill at the end of a stage -----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("window, said", [("after-fit", "not retraining"),
                                          ("after-save", "reusing float_model.h5")])
def test_a_kill_after_the_float_stage_trained_never_retrains_it(tmp_path, window, said, caplog):
    from train.__main__ import main

    args = ["--limit", "1000", "--epochs", "2", "--qat-epochs", "1", "--camera-frames", "0", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed = subprocess.run([sys.executable, "-c", KILLER, window, *args], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert float_epochs_logged(killed.stderr) == 2  # the whole stage had trained
    assert (tmp_path / "float_model.h5").exists() == (window == "after-save")

    caplog.set_level(logging.INFO)  # the same command again, in this process (TensorFlow is loaded)
    assert main(args) == 0, caplog.text[-2000:]
    assert float_epochs_logged(caplog.text) == 0, caplog.text[-3000:]
    assert said in caplog.text
    report = json.loads((tmp_path / "train_report.json").read_text())
    assert report["float"]["epochs_run"] == 2 and len(report["float"]["history"]["loss"]) == 2
    assert report["qat"]["epochs_run"] == 1
    state = json.loads((tmp_path / "train_state.json").read_text())
    assert set(state["stages"]) == {"float", "qat"}
    assert not (tmp_path / "backup").exists()  # removed once the stages were recorded


# --- 2. a NaN learning rate, a diverging loss ---------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-0.001", "fast"])
def test_the_learning_rate_must_be_a_finite_positive_number(value, capsys):
    from train.__main__ import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--learning-rate", value])
    assert exit_info.value.code == 2 and "argument --learning-rate" in capsys.readouterr().err
    assert parse_args(["--learning-rate", "0.01"]).learning_rate == 0.01


@pytest.mark.slow
def test_a_nan_loss_stops_training_with_an_error_and_writes_no_report(tmp_path, monkeypatch, capsys):
    """The CLI refuses a NaN rate; a loss that becomes NaN anyway (here: a NaN schedule) stops
    training at once, exits 1, and leaves neither a model nor a report nor a NaN anywhere."""
    import train.trainer as trainer
    from train.__main__ import main

    monkeypatch.setattr(trainer, "cosine", lambda peak, steps, warmup: float("nan"))
    code = main(["--limit", "400", "--epochs", "3", "--qat-epochs", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1, err[-2000:]
    assert "error: float training diverged: the loss became nan in epoch 1/3" in err
    assert "Traceback" not in err and float_epochs_logged(err) <= 1  # stopped in the first epoch
    assert not (tmp_path / "train_report.json").exists() and not (tmp_path / "float_model.h5").exists()
    assert json.loads((tmp_path / "train_state.json").read_text())["stages"] == {}
    assert not (tmp_path / "backup" / "float" / "chief").exists()  # the diverged epoch was not backed up


def test_a_nan_metric_is_null_in_json():
    from train.trainer import finite_or_none

    assert [finite_or_none(v) for v in (0.5, np.float32(2), float("nan"), float("inf"))] == [0.5, 2.0, None, None]


# --- 3. bad arguments, unwritable outputs, a full disk -----------------------------------------

@pytest.mark.parametrize("seed", ["-1", str(2**32), "x"])
def test_a_bad_seed_is_a_usage_error(seed, capsys):
    from train.__main__ import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--seed", seed])
    assert exit_info.value.code == 2 and "argument --seed" in capsys.readouterr().err


def test_a_bad_seed_on_the_command_line_exits_2_without_a_traceback():
    result = subprocess.run([sys.executable, "-m", "train", "--seed", "-1"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 2 and "argument --seed" in result.stderr and "Traceback" not in result.stderr


def test_export_refuses_a_negative_seed(capsys):
    from export.__main__ import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--seed", "-1"])
    assert exit_info.value.code == 2 and "--seed" in capsys.readouterr().err


def not_a_directory(tmp_path: Path) -> Path:
    """A directory that cannot be created, even by root: its parent is a file."""
    (tmp_path / "file").write_text("a file, not a folder")
    return tmp_path / "file" / "out"


def test_train_to_an_unwritable_out_is_refused_before_any_work(tmp_path, capsys):
    from train.__main__ import main

    out = not_a_directory(tmp_path)
    assert main(["--limit", "400", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: cannot write {out}" in err and "Fashion-MNIST from" not in err


def test_export_to_an_unwritable_out_is_refused_before_any_work(tmp_path, capsys):
    from export.__main__ import main

    model = tmp_path / "qat_model.h5"
    model.write_bytes(b"not read: the output is checked first")
    out = not_a_directory(tmp_path)
    assert main(["--model", str(model), "--out", str(out)]) == 2
    assert f"error: cannot write {out}" in capsys.readouterr().err


def test_a_read_only_out_is_described_as_cannot_write():
    from runtime.files import final_name, write_error as describe

    error = PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/readonly/.qat_model.partial.h5")
    assert describe(error, Path("/readonly")) == "cannot write /readonly/qat_model.h5: Permission denied"
    assert describe(ENOSPC, Path("out")) == "cannot write out: No space left on device"
    assert final_name("/x/.parity.partial.json") == Path("/x/parity.json")
    assert final_name("/x/.golden.partial") == Path("/x/golden") and final_name("/x/y.h5") == Path("/x/y.h5")


def fail_writes_to(monkeypatch, name: str) -> None:
    """A full disk for the temporary file of ``name`` (runtime.files writes text through it)."""
    write_text = Path.write_text

    def full(self, *args, **kwargs):
        if name in self.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)


@pytest.mark.slow
def test_a_full_disk_while_training_leaves_the_old_report(quick_run, tmp_path, monkeypatch, capsys):
    from train.__main__ import main

    out = tmp_path / "run"
    shutil.copytree(quick_run, out)
    before = (out / "train_report.json").read_bytes()
    fail_writes_to(monkeypatch, "train_report")
    assert main([*QUICK_ARGS, "--out", str(out)]) == 2  # both stages reused: straight to the report
    err = capsys.readouterr().err
    assert f"error: cannot write {out / 'train_report.json'}: No space left on device" in err
    assert (out / "train_report.json").read_bytes() == before
    assert not list(out.glob(".*partial*"))


@pytest.mark.slow
def test_a_full_disk_during_export_leaves_the_existing_models(exported, monkeypatch, capsys):
    from export.__main__ import main
    from export.formats import exported as files

    out, _ = exported
    target = files(out)["onnx-float"]
    before = target.read_bytes()

    def full(model, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("onnx.save", full)
    assert main(["--format", "onnx", "--model", str(out / "qat_model.h5")]) == 2
    err = capsys.readouterr().err
    assert f"error: cannot write {target}: No space left on device" in err and "Traceback" not in err
    assert target.read_bytes() == before
    assert not list(out.glob(".*partial*"))


# --- 4. the camera demo: recording, unwritable and full outputs, a closed stdout ----------------

@pytest.fixture
def cv2():
    return pytest.importorskip("cv2")


@pytest.fixture
def signal_handlers():
    """camera_demo.main installs its own SIGINT/SIGTERM handlers: pytest gets its own back."""
    import signal

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


def frame_count(path: Path) -> int:
    import cv2

    return int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))


def run_demo(*args):
    return subprocess.run([sys.executable, "-m", "camera_demo", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_an_unwritable_record_path_exits_2_before_opening_anything(cv2, tmp_path):
    record = not_a_directory(tmp_path) / "video.mp4"
    result = run_demo("--source", "synthetic", "--headless", "--max-frames", "5", "--record", record)
    assert result.returncode == 2, result.stderr
    assert f"error: cannot write {record}" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""  # no frame was classified
    result = run_demo("--source", "synthetic", "--headless", "--max-frames", "5", "--record", tmp_path)
    assert result.returncode == 2 and f"cannot write {tmp_path}: " in result.stderr  # a directory


def full_disk_writer(video_writer_class, fails_at: int):
    """A cv2.VideoWriter whose frame number ``fails_at`` meets a full disk."""

    class FullDiskWriter:
        def __init__(self, *args):
            self.real, self.frames = video_writer_class(*args), 0

        def isOpened(self):
            return self.real.isOpened()

        def write(self, frame):
            self.frames += 1
            if self.frames == fails_at:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.real.write(frame)

        def release(self):
            self.real.release()

    return FullDiskWriter


def test_a_full_disk_while_recording_exits_2_and_keeps_the_old_video(cv2, tmp_path, monkeypatch, capsys,
                                                                     signal_handlers):
    from camera_demo.__main__ import main
    from camera_demo.video import video_writer

    record = tmp_path / "demo.mp4"
    with video_writer(record, 10.0, (64, 48)) as old:
        old.write(np.full((48, 64, 3), 99, np.uint8))
    before = record.read_bytes()
    monkeypatch.setattr(cv2, "VideoWriter", full_disk_writer(cv2.VideoWriter, 3))  # camera_demo.video's cv2
    code = main(["--source", "synthetic", "--headless", "--max-frames", "10", "--record", str(record)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"error: cannot write {record}: No space left on device" in err
    assert record.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["demo.mp4"]


def test_a_video_missing_frames_is_refused_and_the_old_one_kept(cv2, tmp_path):
    """OpenCV does not report a failed write: the finished file is checked to hold every frame."""
    from camera_demo.video import CannotWrite, video_writer

    record = tmp_path / "demo.mp4"
    with video_writer(record, 10.0, (64, 48)) as old:
        old.write(np.full((48, 64, 3), 99, np.uint8))
    before = record.read_bytes()
    with pytest.raises(CannotWrite, match="has 2 of 3 frames"):
        with video_writer(record, 10.0, (64, 48)) as writer:
            writer.write(np.zeros((48, 64, 3), np.uint8))
            writer.write(np.zeros((48, 64, 3), np.uint8))
            writer.frames += 1  # a frame OpenCV silently lost
    assert record.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["demo.mp4"]


def test_a_closed_stdout_ends_the_demo_quietly_with_exit_0(cv2, tmp_path):
    record = tmp_path / "piped.mp4"
    script = (f"{sys.executable} -m camera_demo --source synthetic --headless --max-frames 100000 "
              f"--record {record} | head -1; echo \"status ${{PIPESTATUS[0]}}\" >&2")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert json.loads(result.stdout)["frame"] == 1  # head's one line
    assert result.stderr.strip().splitlines()[-1] == "status 0", result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
    assert frame_count(record) > 1  # the recording was finalised
