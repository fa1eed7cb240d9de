import os

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:  # no per-example deadline: the suite runs in two processes on machines 2-3x apart in speed
    from hypothesis import settings

    settings.register_profile("fashion-edge", deadline=None)
    settings.load_profile("fashion-edge")
except ImportError:
    pass


@pytest.fixture(scope="session")
def fashion():
    """The verified official data set (installed by .ci/run / `make data`)."""
    from train import data

    return data.load(allow_download=False)


QUICK_ARGS = ["--limit", "3000", "--epochs", "3", "--qat-epochs", "1", "--camera-frames", "300"]


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """A real (small) float + QAT training run, shared by the train and export tests."""
    from train.__main__ import main

    out = tmp_path_factory.mktemp("run")
    assert main([*QUICK_ARGS, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def exported(quick_run, tmp_path_factory):
    """quick_run's QAT model exported to every format; returns (out_dir, exit code)."""
    import shutil

    from export.__main__ import main

    out = tmp_path_factory.mktemp("exported")
    for name in ("qat_model.h5", "train_report.json"):
        shutil.copy(quick_run / name, out / name)
    code = main(["--format", "all", "--model", str(out / "qat_model.h5"), "--calibration-size", "200"])
    return out, code


@pytest.fixture(scope="session")
def start_server():
    """Start `python -m runtime.serve ARGS` on a free port; returns (url, process). Stopped at the end."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    processes = []

    def start(*args: str, ready=lambda process: True) -> tuple[str, subprocess.Popen]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        process = subprocess.Popen([sys.executable, "-m", "runtime.serve", "--port", str(port), *args],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200 and ready(process):
                    return url, process
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        process.kill()
        pytest.fail(f"the server did not start: {process.stdout.read()}")

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=20)

