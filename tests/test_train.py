"""The trainer on small stratified subsets: real data, real Keras, real QAT."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import QUICK_ARGS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.slow


def test_report_has_every_key(quick_run):
    report = json.loads((quick_run / "train_report.json").read_text())
    for stage in ("float", "qat"):
        part = report[stage]
        assert 0.0 <= part["test_accuracy"] <= 1.0 and part["test_loss"] > 0
        assert set(part["per_class"]["Trouser"]) == {"precision", "recall", "f1"}
        matrix = np.array(part["confusion_matrix"])
        assert matrix.shape == (10, 10) and matrix.sum() == 10000  # the full official test set
        assert part["epochs_run"] >= 1 and part["wall_time_s"] > 0
    assert report["parameters"] > 50_000 and report["macs"] > 1_000_000
    assert report["data"]["sha256"]["t10k-images-idx3-ubyte"].startswith("5b4141f0")
    assert report["data"]["train"] + report["data"]["validation"] <= 60000


def test_training_learns(quick_run):
    report = json.loads((quick_run / "train_report.json").read_text())
    losses = report["float"]["history"]["loss"]
    assert losses[-1] < losses[0]
    assert report["float"]["test_accuracy"] > 0.5  # well above chance (0.1) on 3,000 images
    assert report["qat"]["test_accuracy"] > 0.5


@pytest.mark.parametrize("name", ["curves.png", "confusion.png", "samples.png"])
def test_plots_are_valid_pngs(quick_run, name):
    import matplotlib.image

    path = quick_run / name
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 200 and image.std() > 0.01  # not blank


def test_qat_model_reloads_with_the_same_predictions(quick_run, fashion):
    from train.trainer import QAT_MODEL, load_qat_model

    model = load_qat_model(quick_run / QAT_MODEL)
    probs = model.predict(fashion.contract.model_input(fashion.test_images[:500]), verbose=0)
    accuracy = (probs.argmax(1) == fashion.test_labels[:500]).mean()
    report = json.loads((quick_run / "train_report.json").read_text())
    assert abs(accuracy - report["qat"]["test_accuracy"]) < 0.1  # first 500 of the same set
    assert any("quant" in layer.name for layer in model.layers)


def test_rerun_with_same_config_reuses_finished_stages(quick_run, tmp_path):
    import shutil

    from train.__main__ import main

    out = tmp_path / "run"
    shutil.copytree(quick_run, out)  # copy2: the same modification times
    before = (out / "qat_model.h5").stat().st_mtime
    assert main([*QUICK_ARGS, "--out", str(out)]) == 0
    assert (out / "qat_model.h5").stat().st_mtime == before


def epochs_logged(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"float epoch (\d+)/", text)]


def test_killed_run_resumes_from_its_last_epoch(tmp_path, caplog):
    """SIGKILL mid-training, re-run: it continues where it was, losing at most one epoch."""
    from train.__main__ import main

    args = ["--limit", "400", "--epochs", "8", "--qat-epochs", "1", "--camera-frames", "0",
            "--out", str(tmp_path)]  # crops resume: test_camera_crops
    cmd = [sys.executable, "-m", "train", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                cwd=Path(__file__).parents[1])
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if len(epochs_logged(log.read_text())) >= 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    first = epochs_logged(log.read_text())
    assert 3 <= len(first) < 8, f"the run was not killed mid-training: {first}"
    assert not (tmp_path / "float_model.h5").exists()

    caplog.set_level(logging.INFO)  # the same command again, in this process (TensorFlow is loaded)
    assert main(args) == 0, caplog.text[-2000:]
    resumed = epochs_logged(caplog.text)
    assert resumed[0] >= first[-1], f"restarted from epoch {resumed[0]}, had reached {first[-1]}"
    assert resumed[0] <= first[-1] + 1 and resumed[-1] == 8
    assert (tmp_path / "qat_model.h5").exists() and (tmp_path / "train_report.json").exists()
    report = json.loads((tmp_path / "train_report.json").read_text())  # the epochs before the kill too
    assert report["float"]["epochs_run"] == 8 and len(report["float"]["history"]["val_accuracy"]) == 8


def test_no_qat_epochs_exports_the_quantized_float_model(tmp_path):
    from train.__main__ import main

    assert main(["--limit", "2000", "--epochs", "2", "--qat-epochs", "0", "--camera-frames", "0",
                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "train_report.json").read_text())
    assert report["qat"]["epochs_run"] == 0 and report["qat"]["history"] == {}
    assert report["float"]["epochs_run"] == 2 and (tmp_path / "qat_model.h5").exists()
    # its quantization ranges set from data, not left at tfmot's start (a chance-level model)
    assert report["float"]["test_accuracy"] > 0.3  # well above chance (0.1), so that the next line means something
    assert abs(report["qat"]["test_accuracy"] - report["float"]["test_accuracy"]) < 0.02, report


def test_mirrored_strategy_trains_in_one_process(tmp_path):
    """--strategy mirrored: this machine's devices (here one CPU replica), the same files as a plain run."""
    from train.__main__ import main

    out = tmp_path / "out"
    assert main(["--strategy", "mirrored", "--limit", "600", "--epochs", "1", "--qat-epochs", "1",
                 "--camera-frames", "0", "--out", str(out)]) == 0
    report = json.loads((out / "train_report.json").read_text())
    assert report["distribution"] == {"strategy": "MirroredStrategy", "workers": 1, "replicas": 1}
    assert report["qat"]["epochs_run"] == 1 and (out / "qat_model.h5").is_file() and not (out / "backup").exists()
