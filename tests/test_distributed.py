"""python -m train --strategy multi-worker: two real worker processes on 127.0.0.1.

The multi-process tests are deselected by plain ``pytest`` / ``make test`` (the
``distributed`` marker); ``make test-distributed`` runs them. Each worker gets one thread
of each TensorFlow pool, so two together use the machine's two cores as one process would.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train.distributed import PEER_LOST, ClusterError, chief_index, local_tf_configs, make_cluster, tf_config

ROOT = Path(__file__).parents[1]


WORKERS = '"cluster": {"worker": ["a:1", "b:1"]}'


@pytest.mark.parametrize("value, words", [
    (None, "needs TF_CONFIG"), ("{", "is not JSON"), ("[]", 'needs a "cluster" object'),
    (f'{{{WORKERS}, "task": {{"type": "worker", "index": 3}}}}', "task.index must be a whole number from 0 to 1"),
    (f'{{{WORKERS}, "task": {{"type": "worker", "index": -0.5}}}}', "got -0.5"),
    (f'{{{WORKERS}, "task": {{"type": "worker", "index": "0"}}}}', "got '0'"),
    (f'{{{WORKERS}, "task": {{"type": "worker", "index": true}}}}', "got True"),
    (f'{{{WORKERS}, "task": {{"type": "worker"}}}}', "got None"),
    (f'{{{WORKERS}, "task": {{"type": "ps", "index": 0}}}}', "no parameter servers"),
    (f'{{{WORKERS}, "task": {{"type": "evaluator", "index": 0}}}}', "no evaluator"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["p:1"]}, "task": {"type": "worker", "index": 0}}', "['ps']"),
    ('{"cluster": {"worker": "a:1,b:1"}, "task": {"type": "worker", "index": 0}}', "must be a list"),
    ('{"cluster": {"worker": ["a:1", 7]}, "task": {"type": "worker", "index": 0}}', "must be a list"),
    ('{"cluster": {"chief": ["c:1", "d:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
     "at most one chief"),
])
def test_tf_config_errors_say_what_is_wrong(monkeypatch, value, words):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ClusterError, match=words):
        make_cluster("multi-worker")


def test_the_chief_is_worker_0_or_the_chief_task(monkeypatch):
    configs = [json.loads(c) for c in local_tf_configs(3)]
    assert [chief_index(c) for c in configs] == [(0, 3), (1, 3), (2, 3)]
    assert len({tuple(c["cluster"]["worker"]) for c in configs}) == 1  # one cluster, three tasks
    cluster = {"chief": ["h0:1"], "worker": ["h1:1", "h2:1"]}
    assert chief_index({"cluster": cluster, "task": {"type": "chief", "index": 0}}) == (0, 3)
    assert chief_index({"cluster": cluster, "task": {"type": "worker", "index": 0}}) == (1, 3)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert tf_config()["task"]["index"] == 1


@pytest.mark.parametrize("value", [None, '{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}',
                                   '{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}'])
def test_multi_worker_with_a_bad_tf_config_is_a_usage_error(monkeypatch, capsys, tmp_path, value):
    from train.__main__ import main

    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    assert main(["--strategy", "multi-worker", "--out", str(tmp_path / "never-written")]) == 2
    err = capsys.readouterr().err
    assert "TF_CONFIG" in err and "Traceback" not in err and not (tmp_path / "never-written").exists()


def worker_env(tf_config: str) -> dict:
    return {**os.environ, "TF_CONFIG": tf_config, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def start_workers(args: list[str], out: Path, logs: list[Path], configs: list[str] | None = None):
    configs = configs or local_tf_configs(len(logs))
    processes = []
    for config, log in zip(configs, logs):
        with open(log, "a") as f:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "train", "--strategy", "multi-worker", *args, "--out", str(out)],
                stdout=f, stderr=subprocess.STDOUT, env=worker_env(config), cwd=ROOT))
    return processes, configs


def wait_all(processes, timeout: float = 600) -> list[int]:
    deadline = time.time() + timeout
    try:
        return [p.wait(timeout=max(deadline - time.time(), 1)) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()


def export(model: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export", "--format", "all", "--model", str(model), *extra],
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                          cwd=ROOT, timeout=600)


def check_run(out: Path, logs: list[Path], codes: list[int], workers: int = 2) -> dict:
    text = [log.read_text() for log in logs]
    assert codes == [0] * workers, "\n".join(t[-3000:] for t in text)
    assert "the chief (worker 0) writes" in text[1]
    for name in ("float_model.h5", "qat_model.h5", "train_report.json", "curves.png", "confusion.png",
                 "samples.png"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".worker-*")) and not (out / "backup").exists()  # nothing left behind
    report = json.loads((out / "train_report.json").read_text())
    assert report["distribution"] == {"strategy": "CollectiveAllReduceStrategy", "workers": 2, "replicas": 2}
    return report


@pytest.mark.distributed
@pytest.mark.slow
def test_two_workers_on_a_folder(tmp_path):
    from test_folders import make_folder

    data = make_folder(tmp_path / "shapes", per_class=40)
    out = tmp_path / "out"
    logs = [tmp_path / "w0.log", tmp_path / "w1.log"]
    processes, _ = start_workers(["--data", str(data), "--epochs", "2", "--qat-epochs", "1", "--batch-size", "4"],
                                 out, logs)
    report = check_run(out, logs, wait_all(processes))
    assert report["data"]["kind"] == "folder"
    done = export(out / "qat_model.h5", "--calibration-size", "30")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((out / "parity.json").read_text())["passed"]


def epochs_logged(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"float epoch (\d+)/", text)]


@pytest.mark.distributed
@pytest.mark.slow
def test_a_killed_worker_resumes_and_the_chief_exports_int8_that_passes_parity(tmp_path):
    """SIGKILL worker 1 mid-epoch; the chief stops (exit 75: a peer was lost), both are
    restarted with the same command and finish from the last finished epoch; the chief's
    model exports to every format through the parity gate."""
    args = ["--limit", "2000", "--epochs", "8", "--qat-epochs", "1", "--camera-frames", "300"]
    out = tmp_path / "out"
    logs = [tmp_path / "w0.log", tmp_path / "w1.log"]
    processes, configs = start_workers(args, out, logs)
    deadline = time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in processes):
        if len(epochs_logged(logs[1].read_text())) >= 2:
            break
        time.sleep(0.05)
    time.sleep(0.5)  # into the next epoch
    processes[1].send_signal(signal.SIGKILL)
    processes[1].wait()
    first = epochs_logged(logs[0].read_text())
    assert 2 <= len(first) < 8, f"not killed mid-training: {first}"
    assert wait_all(processes[:1], timeout=300) == [PEER_LOST], logs[0].read_text()[-3000:]
    assert "restart every worker" in logs[0].read_text()
    assert not (out / "float_model.h5").exists()

    marks = [len(log.read_text()) for log in logs]
    processes, _ = start_workers(args, out, logs, configs)
    report = check_run(out, logs, wait_all(processes))
    resumed = epochs_logged(logs[0].read_text()[marks[0]:])
    assert resumed[0] in (first[-1], first[-1] + 1) and resumed[-1] == 8, (first, resumed)
    assert "resuming after epoch" in logs[1].read_text()[marks[1]:]  # the restarted worker too
    assert report["float"]["epochs_run"] == 8 and len(report["float"]["history"]["loss"]) == 8
    assert report["qat"]["epochs_run"] == 1 and report["qat"]["test_accuracy"] > 0.6  # chance is 0.1
    done = export(out / "qat_model.h5", "--calibration-size", "200")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((out / "parity.json").read_text())["passed"]


@pytest.mark.distributed
@pytest.mark.slow
def test_ray_search_writes_the_local_search_format(tmp_path):
    pytest.importorskip("ray.tune", reason="pip install .[distributed]")
    out = tmp_path / "search.json"
    cmd = [sys.executable, "-m", "train.search", "--backend", "ray", "--trials", "2", "--epochs", "1",
           "--limit", "600", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Error stopping trial" not in done.stdout + done.stderr and "ERROR " not in done.stdout
    result = json.loads(out.read_text())
    assert {"budget", "selection", "wall_time_s", "default", "best", "gain_over_default_pp", "trials"} <= set(result)
    assert sorted(t["trial"] for t in result["trials"]) == [0, 1] and result["backend"] == "ray"
    assert result["default"]["params"] == {"learning_rate": 3e-3, "width": 1.0, "dropout": 0.2, "augment": 1.0}
    for trial in result["trials"]:
        assert 0 <= trial["val_accuracy"] <= 1 and trial["parameters"] > 10_000 and trial["epochs_run"] >= 1
    assert [t["val_accuracy"] for t in result["trials"]] == sorted((t["val_accuracy"] for t in result["trials"]),
                                                                   reverse=True)
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})  # finished: resumes with nothing to do
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming the search" in again.stdout
    assert sorted(t["trial"] for t in json.loads(out.read_text())["trials"]) == [0, 1]
