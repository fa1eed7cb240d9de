"""What the service refuses to do, and why: exceptions of its own, which know no HTTP.

Each carries ``status``, the HTTP status that says the same thing: a hint for the one place that
speaks HTTP (``runtime.serve.routes.service_error``), which answers ``{"detail": message}`` with
it, and Retry-After for ``Busy``. A test or a script calling ``Service`` catches them as they are.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service cannot do; the message says why, for the client."""

    status = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadUpload(ServiceError):
    """An upload that is not a usable image, or costs more to decode than the server allows (``status``
    as ``runtime.images`` judged it: 400, 413, 415 or 422)."""


class Unprocessable(ServiceError):
    """A usable image, but not with this request: a roi outside it, an input the model cannot take."""

    status = 422


class LimitReached(ServiceError):
    """The collect folder holds as many images of the label, or as many labels, as the server keeps."""

    status = 409


class CannotSave(ServiceError):
    """A collected image the disk would not take (full, read-only, a file in the way)."""

    status = 507


class Busy(ServiceError):
    """Too much work waiting in this worker: try again after ``retry_after`` seconds."""

    status = 503
    retry_after = 1
