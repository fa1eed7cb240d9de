"""HTTP API and web page on the runtime: ``python -m runtime.serve`` (needs ``pip install '.[serve]'``)."""

from runtime.serve.app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app"]
