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
    """A real (small) float + QAT training run, shared by the train and export tests: trained once
    per test session, also across `make test`'s processes (read-only: copy it to change it)."""
    import fcntl

    from train.__main__ import main

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's directory, above each process's own
    out = shared / "quick_run"
    with open(shared / "quick_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first process trains; the others wait, then reuse it
        if not (out / "train_report.json").is_file():
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



def pytest_collection_modifyitems(config, items):
    """Files with slow tests (training, exports) first: in `make test`'s two processes, which take
    a file at a time, the long files start at once and the short ones fill in around them."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the order within a file is kept
