"""HTTP API and web page on the runtime: ``python -m runtime.serve`` (needs ``pip install '.[serve]'``)."""

from runtime.serve.app import ServeConfig, Service, create_app, make_app

__all__ = ["ServeConfig", "Service", "create_app", "make_app"]
