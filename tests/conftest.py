import os

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def fashion():
    """The verified official data set (installed by .ci/run / `make data`)."""
    from train import data

    return data.load(allow_download=False)
