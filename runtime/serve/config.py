"""The server's settings (``ServeConfig``), how the parent hands them to every worker process (an
environment variable), and the bearer token's checks: ``check_token`` and ``read_token_file``
refuse, at start, a token that no request could ever match.

No HTTP and nothing else of the server here: the command line, the app and the connection
guards all read it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runtime.images import MAX_PIXELS

CONFIG_ENV = "FASHION_EDGE_SERVE_CONFIG"


@dataclass(frozen=True)
class ServeConfig:
    model: str | None = None  # None: the bundled int8 model
    token: str | None = None  # required as "Authorization: Bearer <token>" on /v1 when set
    token_file: str | None = None  # where workers read the token: then it is not in the environment
    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = MAX_PIXELS  # of an image, as declared: the limit every reader of images shares
    max_batch: int = 32
    body_timeout: float = 10.0  # seconds a client may take to send its body
    threads: int = 1  # inference threads per worker process
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    # Host header values answered (DNS rebinding); empty and not allow_ip_hosts: not checked. The CLI
    # always sets them from --host and --allowed-host (runtime.serve.middleware.allowed_hosts_for).
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)
    allow_ip_hosts: bool = False  # any IP-literal Host too (a 0.0.0.0 or :: bind)
    max_concurrent: int = 64  # requests in progress per worker (complete body to answer); 503 beyond
    # Read by the connection guards (runtime.serve.guards), not the app:
    header_timeout: float = 10.0  # seconds to receive a request's line and headers
    max_header_bytes: int = 32 * 1024  # request line and headers; 431 beyond
    max_connections: int = 512  # open sockets per worker; the one idle longest is closed to make room
    write_timeout: float = 10.0  # seconds an answer may wait for its client to read (writing paused); then closed
    # Pixels (as declared by the headers) that the images of one batch may add up to; None: 4 x max_pixels.
    max_batch_pixels: int | None = None
    # POST /v1/collect saves uploads as training images in collect/LABEL/ (None: no such route, 404)
    collect: str | None = None
    collect_max: int = 10_000  # images per label folder; 409 beyond
    collect_max_labels: int = 100  # label folders; 409 for a new label beyond
    collect_max_bytes: int = 1 << 30  # the images of every label together; 409 beyond

    def to_env(self) -> str:
        values = asdict(self)
        if self.token_file:  # each worker reads the file
            values["token"] = None
        return json.dumps(values)

    @classmethod
    def from_env(cls) -> ServeConfig:
        values = json.loads(os.environ.get(CONFIG_ENV, "{}"))
        values["cors_origins"] = tuple(values.get("cors_origins", ()))
        values["allowed_hosts"] = tuple(values.get("allowed_hosts", ()))
        if values.get("token_file"):
            values["token"] = read_token_file(values["token_file"])
        return cls(**values)


# --- the bearer token -------------------------------------------------------------------------------


class TokenError(ValueError):
    """A token that could never match a request's ``Authorization: Bearer …``."""


def check_token(token: str, source: str) -> str:
    """``token`` if usable, else TokenError saying what is wrong with it (``source``: where it came from).

    Clients send ``Authorization: Bearer TOKEN``; HTTP strips whitespace around a header value and
    FastAPI around the credentials, and a header carries ASCII: a token with surrounding
    whitespace, control or non-ASCII characters would be accepted here and then never match."""
    if not token:
        raise TokenError(f"{source} is empty")
    if token != token.strip():
        raise TokenError(f"{source} starts or ends with whitespace, which a request's 'Authorization: Bearer' "
                         "header cannot carry: no request would ever match it")
    if not (token.isascii() and token.isprintable()):
        raise TokenError(f"{source} has non-ASCII or control characters, which a request's 'Authorization' header "
                         "cannot carry; use printable ASCII, e.g. the output of `openssl rand -hex 16`")
    return token


def read_token_file(path: str | os.PathLike) -> str:
    """The token in ``path``: its whole content, less one trailing newline (as ``echo`` and editors end a line)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise TokenError(f"cannot read the token file {path}: {e.strerror or e}") from None
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    try:
        token = raw.decode("ascii")
    except UnicodeDecodeError:
        raise TokenError(f"the token in {path} is not ASCII, which a request's 'Authorization' header cannot carry; "
                         "use printable ASCII, e.g. the output of `openssl rand -hex 16`") from None
    return check_token(token, f"the token in {path}")
