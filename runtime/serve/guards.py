"""What the server bounds and checks beyond uvicorn's and Starlette's defaults.

Connections (a uvicorn HTTP protocol, ``GuardedHttpToolsProtocol``, or ``GuardedH11Protocol``
where httptools is not installed):

- a request's head (request line and headers) must arrive within ``header_timeout`` of the
  connection opening or of the previous response; else the socket is closed (with a 408 when
  part of a head had arrived). uvicorn's own keep-alive timer only starts after a response,
  so a socket that never sent a byte was held for ever.
- a head may be at most ``max_header_bytes``, counted as the bytes arrive and before the parser
  sees them; beyond it 431 and the socket is closed (httptools builds a header that arrives in
  many pieces by concatenation: quadratic in its size).
- at most ``max_connections`` open sockets per worker; at the limit the least recently active
  socket that owes the server bytes (a request head, or the rest of a body) is closed to make
  room, so neither idle nor trickling sockets can lock clients out.

Requests (ASGI middleware, added by ``runtime.serve.app.add_middleware``):

- ``ConcurrencyLimit``: at most N requests in progress per worker, 503 beyond; /healthz is
  always answered.
- ``HostGuard``: the Host header must name this server (DNS rebinding); 400 otherwise.
- ``CrossSiteGuard``: a POST (or any unsafe method) from another site's page is refused with
  403, since an HTML form posts cross-site without a CORS preflight.

And the bearer token: ``check_token`` and ``read_token_file`` refuse, at start, a token that no
request could ever match.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import os
import re
import socket
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.responses import JSONResponse

from runtime.serve import metrics

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


# --- Host and Origin --------------------------------------------------------------------------------

WILDCARD_BINDS = {"0.0.0.0", "::", ""}
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
_HOST = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._~!$&'()*+,;=%-]+))(?::(?P<port>\d{1,5}))?")
_PATTERN = re.compile(r"\*|(\*\.)?[a-z0-9_~-]+(\.[a-z0-9_~-]+)*|[0-9a-f:.]+")


def normalise_host(host: str) -> str:
    """A host name or IP literal as the guards compare it: lower case, no trailing dot, IPv6 compressed
    and without brackets."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def check_host_pattern(pattern: str) -> str:
    """An --allowed-host value (a name, an IP, ``*.domain`` or ``*``), normalised; ValueError if malformed."""
    host = normalise_host(pattern)
    if not _PATTERN.fullmatch(host):
        raise ValueError(f"{pattern!r} is not a host name, an IP address, '*.domain' or '*' (no scheme, no port)")
    return host


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    return host == "localhost" or (is_ip(host) and ipaddress.ip_address(host).is_loopback)


def allowed_hosts_for(bind: str, extra: Iterable[str] = ()) -> tuple[tuple[str, ...], bool]:
    """The Host header values a server bound to ``bind`` answers to: (names and IPs, any IP literal too?).

    Loopback: the bound address, localhost, 127.0.0.1 and ::1. Every interface (0.0.0.0, ::): any IP
    literal (a DNS-rebinding page can only reach us through a name), localhost and this machine's
    host name (and NAME.local, mDNS). Another address or name: itself and the machine's name.
    ``extra`` (--allowed-host) is added; ``*`` among them turns the check off."""
    host = normalise_host(bind)
    names = [check_host_pattern(h) for h in extra]
    any_ip = host in WILDCARD_BINDS
    if not any_ip:
        names.append(host)
    if is_loopback(host):
        names += LOOPBACK_HOSTS
    else:
        machine = socket.gethostname().lower()
        names += ["localhost", machine, f"{machine}.local"] if any_ip else [machine, f"{machine}.local"]
    return tuple(dict.fromkeys(names)), any_ip


def parse_host_header(value: str | None) -> tuple[str, int | None] | None:
    """``Host: name[:port]`` or ``[ipv6][:port]`` -> (normalised host, port), or None when malformed."""
    match = _HOST.fullmatch(value or "")
    if match is None:
        return None
    if match["ipv6"] is not None and not is_ip(match["ipv6"]):
        return None
    port = int(match["port"]) if match["port"] else None
    return normalise_host(match["ipv6"] or match["name"]), port


def header(scope, name: bytes) -> str | None:
    """The first value of a request header (names in an ASGI scope are lower case), as latin-1."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class HostGuard:
    """400 for a request whose Host header names another server: a DNS-rebinding page reaches a local
    server under the attacker's own name, which this refuses. ``*`` in ``hosts`` allows any."""

    def __init__(self, app, hosts: Iterable[str], any_ip: bool = False):
        self.app = app
        self.hosts = {normalise_host(h) for h in hosts}
        self.suffixes = tuple(h[1:] for h in self.hosts if h.startswith("*."))
        self.any_ip = any_ip
        self.allow_any = "*" in self.hosts

    def allows(self, value: str | None) -> bool:
        parsed = parse_host_header(value)
        if parsed is None:
            return False
        host = parsed[0]
        return host in self.hosts or host.endswith(self.suffixes) or (self.any_ip and is_ip(host))

    async def __call__(self, scope, receive, send):
        if self.allow_any or scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        hosts = [value for key, value in scope["headers"] if key == b"host"]
        if len(hosts) == 1 and self.allows(hosts[0].decode("latin-1")):
            return await self.app(scope, receive, send)
        detail = "unknown Host header: this server answers to its own addresses (see --allowed-host)"
        await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)


SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of_request(scope) -> tuple[str, int] | None:
    """(host, port) this request was addressed to, from its Host header and scheme."""
    parsed = parse_host_header(header(scope, b"host"))
    if parsed is None:
        return None
    host, port = parsed
    return host, port or DEFAULT_PORTS.get(scope.get("scheme", "http"), 80)


def host_and_port(origin: str) -> tuple[str, int] | None:
    """(host, port) of an Origin header (``scheme://host[:port]``), None for ``null`` or a malformed one."""
    try:
        parts = urlsplit(origin)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or port is None:
        return None
    return normalise_host(parts.hostname), port


class CrossSiteGuard:
    """403 for an unsafe request (POST, …) sent by another site's page.

    A page on any site can make the browser POST a form to this server, with no CORS preflight
    to stop it; without --token that is all /v1 needs. Browsers say where a request comes from:
    ``Origin`` on every cross-origin POST, and ``Sec-Fetch-Site``. Allowed: no Origin (curl,
    scripts, the tests), this server's own origin (the web page), a --cors-origin. Refused: any
    other Origin (``null`` too), or ``Sec-Fetch-Site: cross-site``. Safe methods pass: the browser
    does not let the other site read the answer (no CORS)."""

    def __init__(self, app, allowed_origins: Iterable[str] = ()):
        self.app = app
        origins = set(allowed_origins)
        self.allow_any = "*" in origins
        self.allowed = {o.lower().rstrip("/") for o in origins}

    def allows(self, scope) -> bool:
        origin = header(scope, b"origin")
        if origin is None:
            return header(scope, b"sec-fetch-site") != "cross-site"
        if self.allow_any or origin.lower().rstrip("/") in self.allowed:
            return True
        own = origin_of_request(scope)
        return own is not None and host_and_port(origin) == own

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or self.allows(scope):
            return await self.app(scope, receive, send)
        detail = ("cross-site request refused: this server takes POSTs from its own page, from clients "
                  "that are not browsers, and from origins given with --cors-origin")
        await JSONResponse({"detail": detail}, status_code=403)(scope, receive, send)


# --- requests in progress ---------------------------------------------------------------------------

class ConcurrencyLimit:
    """At most ``limit`` requests in progress in this worker; beyond it 503 with ``Retry-After``.

    Counts requests (what costs memory and CPU), not sockets: an idle socket holds nothing here.
    ``exempt`` paths (the liveness probe) are always answered."""

    def __init__(self, app, limit: int, exempt: Iterable[str] = ("/healthz",)):
        self.app = app
        self.limit = limit
        self.exempt = frozenset(exempt)
        self.active = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.exempt:
            return await self.app(scope, receive, send)
        if self.active >= self.limit:
            detail = f"the server is busy ({self.limit} requests in progress); retry in a moment"
            response = JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})
            return await response(scope, receive, send)
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


# --- connections: a uvicorn HTTP protocol -----------------------------------------------------------

@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float  # seconds
    max_header_bytes: int
    max_connections: int  # per worker


@functools.cache
def connection_limits() -> ConnectionLimits:
    """This worker's limits: ServeConfig's, from the environment variable every worker reads."""
    from runtime.serve.app import CONFIG_ENV, ServeConfig  # not at the top: app uses this module

    values = json.loads(os.environ.get(CONFIG_ENV, "{}"))
    default = ServeConfig()
    return ConnectionLimits(**{name: values.get(name, getattr(default, name)) for name in
                               ("header_timeout", "max_header_bytes", "max_connections")})


LINGER_SECONDS = 1.0  # after a 408 or 431, what the client still sends is discarded this long, then closed
# Per server (one per worker process): the connections that owe the server bytes (waiting for a
# request head, or in the middle of a request's body), least recently active first: at the socket
# cap the first is closed, so neither idle nor trickling sockets can lock clients out.
_WAITING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _status(code: int, phrase: str, message: str, default_headers) -> bytes:
    lines = [f"HTTP/1.1 {code} {phrase}".encode()]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [b"content-type: text/plain; charset=utf-8", b"content-length: %d" % len(message), b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + message.encode()


class HeadGuard:
    """Mixed in before a uvicorn HTTP protocol class: the head timeout, the head size cap and the
    socket cap described in the module docstring. Subclasses say when the parser waits for a head
    (``in_head``)."""

    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _discarding = False
    limits: ConnectionLimits

    def in_head(self) -> bool:  # pragma: no cover - each protocol says
        raise NotImplementedError

    def response_in_progress(self) -> bool:
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.limits = connection_limits()
        waiting = _WAITING.setdefault(self.server_state, {})
        if len(self.connections) > self.limits.max_connections:
            if waiting:  # make room: close the socket that has owed us bytes longest
                next(iter(waiting)).drop("evicted")
            else:  # every socket is busy with a request: this one cannot be served now
                self.drop("connection_limit")
                return
        self.await_head()

    def connection_lost(self, exc) -> None:
        self.head_done()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feeds the parser at most what may still belong to the head, so a head over the cap is
        refused having cost no more than the cap (a body is fed in pieces of the cap's size too)."""
        if self._discarding:
            return
        limit = self.limits.max_header_bytes
        view = memoryview(data) if len(data) > limit else data
        start = 0
        while start < len(data) and not self.transport.is_closing():
            in_head = self.in_head()
            room = limit - self._head_bytes if in_head else limit
            if room <= 0:
                return self.head_too_large()
            part = view[start:start + room] if (start or room < len(data)) else data
            start += len(part)
            if in_head:
                self._head_bytes += len(part)
            super().data_received(part)
            self.after_feed()
            if self._head_bytes >= limit and self.in_head() and not self.transport.is_closing():
                return self.head_too_large()

    def head_too_large(self) -> None:
        limit = self.limits.max_header_bytes
        self.refuse(431, "Request Header Fields Too Large", f"request line and headers over {limit:,} bytes",
                    "header_too_large")

    def after_feed(self) -> None:
        """Called after each piece of data went to the parser."""

    # the head's timer and the waiting list
    def await_head(self) -> None:
        """The parser waits for a request head and no response is being sent: start the clock."""
        if self._head_timer is not None or self.transport.is_closing():
            return
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self.head_timed_out)
        _WAITING.setdefault(self.server_state, {})[self] = None

    def receiving_body(self) -> None:
        """A body's bytes arrived (or are due): this socket is now the most recently active."""
        waiting = _WAITING.setdefault(self.server_state, {})
        waiting.pop(self, None)
        waiting[self] = None

    def head_done(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        waiting = _WAITING.get(self.server_state)
        if waiting:
            waiting.pop(self, None)

    def head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.response_in_progress():
            return
        if self._head_bytes:
            self.refuse(408, "Request Timeout",
                        f"request headers not received within {self.limits.header_timeout:g} s", "header_timeout")
        else:
            self.drop("header_timeout")

    def drop(self, reason: str) -> None:
        """Close this connection without an answer; it stops counting against the socket cap now."""
        self.forget(reason)
        if not self.transport.is_closing():
            self.transport.close()

    def refuse(self, status: int, phrase: str, message: str, reason: str) -> None:
        """Answer ``status`` and close. Unless a response is being written on this connection (then it
        is only closed): the answer is followed by a half-close, and what the client still sends is
        read and discarded for LINGER_SECONDS, so its kernel does not reset the connection (losing
        the answer) while it is still sending."""
        if self.response_in_progress() or self.transport.is_closing():
            return self.drop(reason)
        self.transport.write(_status(status, phrase, message, self.server_state.default_headers))
        if not self.transport.can_write_eof():  # TLS
            return self.drop(reason)
        self.transport.write_eof()
        self._discarding = True
        self.forget(reason)
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def forget(self, reason: str) -> None:
        self.head_done()
        self.connections.discard(self)
        metrics.REFUSED.labels(reason).inc()


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
    HttpToolsProtocol = None
else:
    class GuardedHttpToolsProtocol(HeadGuard, HttpToolsProtocol):
        """uvicorn's httptools protocol with the head timeout, head size cap and socket cap."""

        _awaiting_head = True

        def in_head(self) -> bool:
            return self._awaiting_head

        def on_headers_complete(self) -> None:
            self._awaiting_head = False
            self.head_done()
            self.receiving_body()  # until on_message_complete
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self.receiving_body()
            super().on_body(body)

        def on_message_complete(self) -> None:
            self.head_done()
            super().on_message_complete()
            self._awaiting_head = True
            self._head_bytes = 0
            if not self.response_in_progress() and not self.pipeline:
                self.await_head()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._awaiting_head and not self.pipeline and not self.transport.is_closing():
                self.await_head()


try:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError:  # pragma: no cover - h11 is a dependency of uvicorn
    H11Protocol = None
else:
    class GuardedH11Protocol(HeadGuard, H11Protocol):
        """uvicorn's h11 protocol with the head timeout, head size cap and socket cap (without httptools)."""

        def in_head(self) -> bool:
            return self.conn.their_state is h11.IDLE

        def after_feed(self) -> None:
            self.sync_head()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.sync_head()

        def sync_head(self) -> None:
            if self.transport.is_closing():
                return
            if self.in_head():
                if self._head_timer is None:
                    self._head_bytes = 0
                self.await_head()
            elif self.conn.their_state is h11.SEND_BODY:
                self.head_done()
                self.receiving_body()
            else:
                self.head_done()


PROTOCOL = ("runtime.serve.guards:GuardedHttpToolsProtocol" if HttpToolsProtocol is not None
            else "runtime.serve.guards:GuardedH11Protocol")
