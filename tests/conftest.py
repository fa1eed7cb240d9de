import os

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def fashion():
    """The verified official data set (installed by .ci/run / `make data`)."""
    from train import data

    return data.load(allow_download=False)


QUICK_ARGS = ["--limit", "3000", "--epochs", "3", "--qat-epochs", "1"]


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
