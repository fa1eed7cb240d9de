"""Turn any image into what the model takes (see runtime/preprocess/locating.py for now)."""

from .locating import *  # noqa: F401,F403
