"""HTTP API and web page on the runtime: ``python -m runtime.serve`` (needs ``pip install '.[serve]'``)."""

from runtime.serve.app import create_app, make_app
from runtime.serve.config import ServeConfig
from runtime.serve.service import Service

__all__ = ["ServeConfig", "Service", "create_app", "make_app"]
